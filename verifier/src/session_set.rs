//! The sessions the verifier knows, in the least memory that answers its one
//! question (may a token of this session be used?): a session id is 16 random
//! bytes and its state 32 bits, 20 bytes a session at a million sessions.
//!
//! - `base`: sorted by id, with an index of where each first two bytes start,
//!   so a lookup is one index read and a binary search over a handful of
//!   entries. A revocation or a longer life changes its entry in place; a
//!   deletion leaves the entry marked gone.
//! - `recent`: sessions created since `base` was built. When it grows past a
//!   share of `base`, or `base` holds many expired or gone entries, the two are
//!   merged into a new `base` while requests go on reading the old one
//!   ([`SessionSet::merged`]), and swapped in.
//! - `odd`: ids the issuer does not make (not base64url of 16 bytes: rows made
//!   by hand, test fixtures), kept as text.
//!
//! Expired sessions are not swept one by one: a lookup treats an entry past
//! its expiry as unknown, and the next merge leaves it out. Nothing here walks
//! every session while holding the lock requests need.

use std::collections::HashMap;

use softphone_shared::session_id;

use crate::revocations::Standing;

/// A session id as the issuer makes them, its random bytes first.
pub type Sid = [u8; 16];

/// Expiries are kept as seconds after the set's origin (the earliest live
/// expiry when it was built; each merge moves it on) in 31 bits, 68 years;
/// the top bit is "revoked". An origin of the set's own keeps every clock
/// working, the epoch's and the year 9999's alike.
const REVOKED: u32 = 1 << 31;
const EXPIRY_MASK: u32 = REVOKED - 1;
/// An entry whose row was deleted: never usable (no state is 0, see [`State::new`]).
const GONE: State = State(0);

/// `recent` is merged into `base` once it holds this many sessions, or a
/// sixteenth of `base`, whichever is more: merging costs a pass over `base`,
/// so it must buy room for many inserts.
const MERGE_AT_LEAST: usize = 4096;

/// A session's expiry (relative to its set's origin) and whether it was
/// revoked, in 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State(u32);

impl State {
    fn new(origin: i64, expires: i64, revoked: bool) -> State {
        // At or before the origin: a second after it, still expired (see
        // `origin_for`). Beyond 68 years: as late as it goes. 0 is GONE.
        let seconds = expires
            .saturating_sub(origin)
            .clamp(1, i64::from(EXPIRY_MASK));
        State(seconds as u32 | if revoked { REVOKED } else { 0 })
    }

    fn expires(self, origin: i64) -> i64 {
        origin.saturating_add(i64::from(self.0 & EXPIRY_MASK))
    }

    fn revoked(self) -> bool {
        self.0 & REVOKED != 0
    }

    /// The same expiry and revocation against another origin.
    fn rebased(self, from: i64, to: i64) -> State {
        if self.0 & EXPIRY_MASK == EXPIRY_MASK {
            return self; // as late as it goes stays so
        }
        State::new(to, self.expires(from), self.revoked())
    }
}

/// The id of a session in the form the issuer makes, random bytes first
/// (ids begin with their creation time, and the index of `base` is by the
/// first two bytes); `None` for any other text.
pub fn parse_sid(sid: &str) -> Option<Sid> {
    session_id::parse(sid).map(session_id::random_first)
}

/// The text of an id, as the issuer wrote it.
pub fn sid_text(sid: &Sid) -> String {
    session_id::text(&session_id::time_first(*sid))
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    sid: Sid,
    state: State,
}

/// `base`: entries sorted by id, and for each value of an id's first two
/// bytes, where its entries start.
#[derive(Debug, Default)]
struct Sorted {
    entries: Vec<Entry>,
    /// 65 537 offsets when there are entries, empty otherwise.
    starts: Vec<u32>,
}

impl Sorted {
    fn new(mut entries: Vec<Entry>) -> Sorted {
        entries.sort_unstable_by_key(|e| e.sid);
        // Two rows with one id cannot come from the database (the id is its
        // key); keep the last should it ever happen.
        entries.dedup_by(|later, earlier| {
            let same = later.sid == earlier.sid;
            if same {
                earlier.state = later.state;
            }
            same
        });
        Sorted::indexed(entries)
    }

    /// `entries` must be sorted by id, without repeats.
    fn indexed(mut entries: Vec<Entry>) -> Sorted {
        entries.shrink_to_fit();
        let mut starts = Vec::new();
        if !entries.is_empty() {
            starts = Vec::with_capacity(65_537);
            let mut at = 0usize;
            for prefix in 0..=65_536usize {
                while at < entries.len() && usize::from(prefix_of(&entries[at].sid)) < prefix {
                    at += 1;
                }
                starts.push(at as u32);
            }
        }
        Sorted { entries, starts }
    }

    fn position(&self, sid: &Sid) -> Option<usize> {
        let prefix = usize::from(prefix_of(sid));
        let from = *self.starts.get(prefix)? as usize;
        let to = *self.starts.get(prefix + 1)? as usize;
        let slice = self.entries.get(from..to)?;
        slice
            .binary_search_by(|e| e.sid.cmp(sid))
            .ok()
            .map(|i| from + i)
    }
}

fn prefix_of(sid: &Sid) -> u16 {
    u16::from_be_bytes([sid[0], sid[1]])
}

/// Every session the database holds, live or revoked, until it expires.
#[derive(Debug, Default)]
pub struct SessionSet {
    /// What the expiries count from.
    origin: i64,
    base: Sorted,
    recent: HashMap<Sid, State>,
    odd: HashMap<Box<str>, State>,
    /// Changes read but not yet settled into `base` and `recent`, which
    /// lookups see first: a burst's thousands of rows are shown at once
    /// ([`SessionSet::show`]) and settled after, a few at a time
    /// ([`SessionSet::settle`]), while requests already answer from memory.
    /// Empty otherwise.
    pending: HashMap<Sid, State>,
    /// Entries of `base` whose row was deleted.
    gone: usize,
}

/// Changes for [`SessionSet::show`], made by [`SessionSet::pending`].
#[derive(Debug, Default)]
pub struct Pending(HashMap<Sid, State>);

/// What [`SessionSet::set`], [`SessionSet::remove`] and
/// [`SessionSet::settle`] did to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It was usable and no longer is: its live subscriptions must end.
    Ended,
    Other,
}

impl Change {
    /// Two changes of one session in a row: ended if either ended it (it
    /// cannot be usable again in between but for a deleted id made again by
    /// hand).
    fn then(self, next: Change) -> Change {
        if self == Change::Ended || next == Change::Ended {
            Change::Ended
        } else {
            Change::Other
        }
    }
}

/// A session as [`SessionSet::each`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub sid: String,
    pub expires: i64,
    pub revoked: bool,
}

impl SessionSet {
    fn live(&self, state: State, cutoff: i64) -> bool {
        state != GONE && state.expires(self.origin) >= cutoff
    }

    fn usable(&self, state: Option<State>, cutoff: i64) -> bool {
        state.is_some_and(|s| self.live(s, cutoff) && !s.revoked())
    }

    /// The state of `sid`, whatever its age; a pending change first.
    fn state(&self, sid: &str) -> Option<State> {
        match parse_sid(sid) {
            Some(id) => self
                .pending
                .get(&id)
                .copied()
                .or_else(|| self.state_of(&id)),
            None => self.odd.get(sid).copied(),
        }
    }

    fn state_of(&self, id: &Sid) -> Option<State> {
        if let Some(state) = self.recent.get(id) {
            return Some(*state);
        }
        let at = self.base.position(id)?;
        Some(self.base.entries[at].state).filter(|s| *s != GONE)
    }

    /// What the set says of `sid` at `cutoff` (the earliest live expiry): an
    /// expired session is as unknown as a deleted one.
    pub fn standing(&self, sid: &str, cutoff: i64) -> Standing {
        match self.state(sid) {
            Some(state) if self.live(state, cutoff) => {
                if state.revoked() {
                    Standing::Revoked
                } else {
                    Standing::Usable
                }
            }
            _ => Standing::Unknown,
        }
    }

    /// Changed rows (id, expiry, revoked) and deleted ids, in the order
    /// read, as a [`Pending`] for [`SessionSet::show`]; `None` if an id is
    /// not one the issuer makes (rows made by hand: applied as they come).
    /// Needs only `&self`: it is built under the read lock requests share.
    pub fn pending<'a>(
        &self,
        rows: impl Iterator<Item = (&'a str, i64, bool)>,
        deleted: impl Iterator<Item = &'a str>,
    ) -> Option<Pending> {
        let mut pending = HashMap::with_capacity(rows.size_hint().0 + deleted.size_hint().0);
        for sid in deleted {
            pending.insert(parse_sid(sid)?, GONE);
        }
        // After the deletions: a deleted id made again is in both.
        for (sid, expires, revoked) in rows {
            pending.insert(parse_sid(sid)?, State::new(self.origin, expires, revoked));
        }
        Some(Pending(pending))
    }

    /// Shows `pending` to lookups until each change is settled. A session
    /// still shown from an earlier burst is settled first, as
    /// [`SessionSet::set`] does, so that what that change ended is not lost;
    /// returns those sessions.
    pub fn show(&mut self, pending: Pending, cutoff: i64) -> Vec<Sid> {
        if self.pending.is_empty() {
            self.pending = pending.0;
            return Vec::new();
        }
        let mut ended = Vec::new();
        for (id, state) in pending.0 {
            if self.settle_id(&id, cutoff) == Change::Ended {
                ended.push(id);
            }
            self.pending.insert(id, state);
        }
        ended
    }

    /// Moves the shown change of `sid`, if it still waits, into `base` or
    /// `recent`: lookups answer as before, from one place fewer.
    pub fn settle(&mut self, sid: &str, cutoff: i64) -> Change {
        parse_sid(sid).map_or(Change::Other, |id| self.settle_id(&id, cutoff))
    }

    fn settle_id(&mut self, id: &Sid, cutoff: i64) -> Change {
        let Some(state) = self.pending.remove(id) else {
            return Change::Other;
        };
        let was = self.put(id, state);
        self.ended(was, Some(state).filter(|s| *s != GONE), cutoff)
    }

    /// Settles every shown change at once; returns the sessions that ended.
    /// For a set no lookup reads any more (the one a re-read replaced).
    pub fn settle_all(&mut self, cutoff: i64) -> Vec<Sid> {
        let ids: Vec<Sid> = self.pending.keys().copied().collect();
        ids.into_iter()
            .filter(|id| self.settle_id(id, cutoff) == Change::Ended)
            .collect()
    }

    /// Once every shown change is settled, the emptied map (its room kept
    /// from the burst), to be dropped outside the lock.
    pub fn settled(&mut self) -> Option<Pending> {
        self.pending
            .is_empty()
            .then(|| Pending(std::mem::take(&mut self.pending)))
    }

    /// How many changes are shown and not yet settled.
    pub fn showing(&self) -> usize {
        self.pending.len()
    }

    /// Records a row of the database. A session with a shown change is
    /// settled first, so that the row replaces it rather than hide behind it.
    pub fn set(&mut self, sid: &str, expires: i64, revoked: bool, cutoff: i64) -> Change {
        let state = State::new(self.origin, expires, revoked);
        match parse_sid(sid) {
            Some(id) => {
                let settled = self.settle_id(&id, cutoff);
                let was = self.put(&id, state);
                settled.then(self.ended(was, Some(state), cutoff))
            }
            None => {
                let was = self.odd.insert(sid.into(), state);
                self.ended(was, Some(state), cutoff)
            }
        }
    }

    /// Forgets a session whose row was deleted (settling a shown change of
    /// it first, as [`SessionSet::set`] does).
    pub fn remove(&mut self, sid: &str, cutoff: i64) -> Change {
        match parse_sid(sid) {
            Some(id) => {
                let settled = self.settle_id(&id, cutoff);
                let was = self.put(&id, GONE);
                settled.then(self.ended(was, None, cutoff))
            }
            None => {
                let was = self.odd.remove(sid);
                self.ended(was, None, cutoff)
            }
        }
    }

    /// Puts `state` (GONE: the row was deleted) for `id` in `base` or
    /// `recent`; returns the state it had there. One lookup: a burst settles
    /// thousands of them. An id is live in `base` or in `recent`, never in
    /// both.
    fn put(&mut self, id: &Sid, state: State) -> Option<State> {
        if state == GONE {
            return self.recent.remove(id).or_else(|| {
                let at = self.base.position(id)?;
                let entry = &mut self.base.entries[at];
                if entry.state == GONE {
                    return None;
                }
                self.gone += 1;
                Some(std::mem::replace(&mut entry.state, GONE))
            });
        }
        match self.base.position(id) {
            Some(at) if self.base.entries[at].state != GONE => {
                Some(std::mem::replace(&mut self.base.entries[at].state, state))
            }
            // New, or a deleted id made again (by hand): it lives in
            // `recent` until the next merge.
            _ => self.recent.insert(*id, state),
        }
    }

    fn ended(&self, was: Option<State>, now: Option<State>, cutoff: i64) -> Change {
        if self.usable(was, cutoff) && !self.usable(now, cutoff) {
            Change::Ended
        } else {
            Change::Other
        }
    }

    /// Sessions live at `cutoff`, and how many of them are revoked: what the
    /// database's counts are compared with. A pass over every session, made
    /// under the read lock (requests read on meanwhile).
    pub fn counts(&self, cutoff: i64) -> (usize, usize) {
        let mut live = 0;
        let mut revoked = 0;
        for state in self.states() {
            if self.live(state, cutoff) {
                live += 1;
                revoked += usize::from(state.revoked());
            }
        }
        (live, revoked)
    }

    /// Sessions held, expired ones not yet merged away included; a session
    /// only shown (new in a burst not yet settled) is not counted yet.
    pub fn len(&self) -> usize {
        self.base.entries.len() - self.gone + self.recent.len() + self.odd.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn states(&self) -> impl Iterator<Item = State> + '_ {
        self.base
            .entries
            .iter()
            .map(|e| e.state)
            .chain(self.recent.values().copied())
            .chain(self.odd.values().copied())
            .filter(|s| *s != GONE)
    }

    /// Every session held, ids as text (a pass that allocates: for rare jobs),
    /// as settled: without the changes only shown.
    pub fn each(&self) -> impl Iterator<Item = Session> + '_ {
        let session = move |sid: String, state: State| Session {
            sid,
            expires: state.expires(self.origin),
            revoked: state.revoked(),
        };
        self.base
            .entries
            .iter()
            .filter(|e| e.state != GONE)
            .map(move |e| session(sid_text(&e.sid), e.state))
            .chain(
                self.recent
                    .iter()
                    .map(move |(sid, s)| session(sid_text(sid), *s)),
            )
            .chain(
                self.odd
                    .iter()
                    .map(move |(sid, s)| session(sid.to_string(), *s)),
            )
    }

    /// Whether `recent` has grown enough to be worth a merge (a pass over
    /// `base`): past a sixteenth of `base`.
    pub fn recent_is_full(&self) -> bool {
        self.recent.len() >= MERGE_AT_LEAST.max(self.base.entries.len() / 16)
    }

    /// Whether a quarter of `base` is gone or expired at `cutoff`: a pass over
    /// `base`, so asked as often as the counts are.
    pub fn base_is_dying(&self, cutoff: i64) -> bool {
        let base = self.base.entries.len();
        let dead = self
            .base
            .entries
            .iter()
            .filter(|e| !self.live(e.state, cutoff))
            .count();
        base >= MERGE_AT_LEAST && dead * 4 >= base
    }

    /// A new set with `recent` merged into `base`, the entries gone or
    /// expired at `cutoff` left out, and a new origin. Reads `self`
    /// only (under the read lock, requests go on), and costs one pass: `base`
    /// is sorted already, so only `recent` is sorted before the two are merged.
    /// Only once every shown change is settled: the new set has none.
    pub fn merged(&self, cutoff: i64) -> SessionSet {
        debug_assert_eq!(self.showing(), 0, "merged while changes are shown");
        let (from, to) = (self.origin, origin_for(cutoff));
        let keep = |e: &Entry| self.live(e.state, cutoff);
        let rebase = |e: Entry| Entry {
            sid: e.sid,
            state: e.state.rebased(from, to),
        };
        let mut recent: Vec<Entry> = self
            .recent
            .iter()
            .map(|(sid, state)| Entry {
                sid: *sid,
                state: *state,
            })
            .filter(keep)
            .map(rebase)
            .collect();
        recent.sort_unstable_by_key(|e| e.sid);
        let mut entries = Vec::with_capacity(self.base.entries.len() + recent.len());
        let mut old = self
            .base
            .entries
            .iter()
            .copied()
            .filter(keep)
            .map(rebase)
            .peekable();
        let mut new = recent.into_iter().peekable();
        loop {
            let next = match (old.peek(), new.peek()) {
                (Some(a), Some(b)) if a.sid < b.sid => old.next(),
                // In both (cannot be, as a live entry of `base` is changed in
                // place): `recent` is the newer.
                (Some(a), Some(b)) if a.sid == b.sid => {
                    old.next();
                    new.next()
                }
                (_, Some(_)) => new.next(),
                (Some(_), None) => old.next(),
                (None, None) => break,
            };
            entries.extend(next);
        }
        SessionSet {
            origin: to,
            base: Sorted::indexed(entries),
            recent: HashMap::new(),
            odd: self
                .odd
                .iter()
                .filter(|(_, s)| self.live(**s, cutoff))
                .map(|(sid, s)| (sid.clone(), s.rebased(from, to)))
                .collect(),
            pending: HashMap::new(),
            gone: 0,
        }
    }
}

/// The origin of a set of sessions live at `cutoff`: two seconds before it,
/// so that a state's smallest expiry (a second after the origin, where any
/// earlier one is put) is expired, and 0 stays free for GONE.
fn origin_for(cutoff: i64) -> i64 {
    cutoff.saturating_sub(2)
}

/// Collects rows as they are read, then sorts them once.
#[derive(Debug)]
pub struct Builder {
    origin: i64,
    entries: Vec<Entry>,
    odd: HashMap<Box<str>, State>,
}

impl Builder {
    /// For rows live at `cutoff`.
    pub fn new(cutoff: i64) -> Builder {
        Builder {
            origin: origin_for(cutoff),
            entries: Vec::new(),
            odd: HashMap::new(),
        }
    }

    pub fn add(&mut self, sid: &str, expires: i64, revoked: bool) {
        let state = State::new(self.origin, expires, revoked);
        match parse_sid(sid) {
            Some(sid) => self.entries.push(Entry { sid, state }),
            None => {
                self.odd.insert(sid.into(), state);
            }
        }
    }

    pub fn finish(self) -> SessionSet {
        SessionSet {
            origin: self.origin,
            base: Sorted::new(self.entries),
            recent: HashMap::new(),
            odd: self.odd,
            pending: HashMap::new(),
            gone: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn sid(i: u32) -> String {
        let mut bytes = [0u8; 16];
        // Spread over the index's prefixes, and several per prefix.
        bytes[..4].copy_from_slice(&(i.wrapping_mul(2_654_435_761) >> 3).to_be_bytes());
        bytes[12..].copy_from_slice(&i.to_be_bytes());
        sid_text(&bytes)
    }

    /// A set of `n` sessions expiring at `expires`, those `revoked` says revoked.
    fn set_of(n: u32, expires: i64, revoked: impl Fn(u32) -> bool) -> SessionSet {
        let mut builder = Builder::new(NOW);
        for i in 0..n {
            builder.add(&sid(i), expires, revoked(i));
        }
        builder.finish()
    }

    #[test]
    fn a_state_keeps_its_expiry_and_revocation_against_any_origin() {
        let mask = i64::from(EXPIRY_MASK);
        for origin in [-30, 0, NOW, 253_402_300_000] {
            for expires in [origin + 1, origin + 30 * 86_400, origin + mask] {
                for revoked in [false, true] {
                    let state = State::new(origin, expires, revoked);
                    assert_ne!(state, GONE);
                    assert_eq!((state.expires(origin), state.revoked()), (expires, revoked));
                    if expires > origin + 100 && expires < origin + mask {
                        let moved = state.rebased(origin, origin + 100);
                        assert_eq!(moved.expires(origin + 100), expires);
                        assert_eq!(moved.revoked(), revoked);
                    }
                }
            }
        }
        let expired = State::new(NOW, 0, false);
        assert_ne!(expired, GONE);
        assert_eq!(expired.expires(NOW), NOW + 1, "at or before the origin");
        let late = State::new(NOW, i64::MAX, true);
        assert_eq!(late.expires(NOW), NOW + mask);
        assert!(late.revoked());
    }

    #[test]
    fn only_the_issuers_spelling_is_a_compact_id() {
        let id = [7u8; 16];
        assert_eq!(parse_sid(&sid_text(&id)), Some(id));
        for other in ["", "s0", "live-session", "AAAAAAAAAAAAAAAAAAAAAB"] {
            assert_eq!(parse_sid(other), None, "{other}");
        }
    }

    #[test]
    fn ids_made_in_one_millisecond_spread_over_the_index() {
        let prefixes: std::collections::HashSet<u16> = (0..64)
            .map(|_| {
                let id = session_id::new(1_800_000_000_000).unwrap();
                prefix_of(&parse_sid(&session_id::text(&id)).unwrap())
            })
            .collect();
        // 64 draws from 65 536 values: all alike only if the prefix were
        // the creation time.
        assert!(prefixes.len() > 60, "{}", prefixes.len());
    }

    #[test]
    fn lookups_find_every_session_and_nothing_else() {
        let mut set = set_of(20_000, NOW + 3600, |i| i % 7 == 0);
        set.set("hand-made", NOW + 60, false, NOW);
        for i in 0..20_000 {
            let want = if i % 7 == 0 {
                Standing::Revoked
            } else {
                Standing::Usable
            };
            assert_eq!(set.standing(&sid(i), NOW), want, "{i}");
        }
        assert_eq!(set.standing(&sid(20_000), NOW), Standing::Unknown);
        assert_eq!(set.standing("hand-made", NOW), Standing::Usable);
        assert_eq!(
            set.standing("hand-made", NOW + 61),
            Standing::Unknown,
            "expired"
        );
        assert_eq!(set.len(), 20_001);
        assert_eq!(set.counts(NOW), (20_001, 2858));
    }

    #[test]
    fn changes_are_seen_before_and_after_a_merge() {
        let mut set = set_of(100, NOW + 3600, |_| false);
        let revoke = |set: &mut SessionSet, i| set.set(&sid(i), NOW + 3600, true, NOW);
        assert_eq!(revoke(&mut set, 1), Change::Ended);
        assert_eq!(revoke(&mut set, 1), Change::Other, "already revoked");
        assert_eq!(set.remove(&sid(2), NOW), Change::Ended);
        assert_eq!(set.remove(&sid(2), NOW), Change::Other);
        assert_eq!(set.set(&sid(500), NOW + 10, false, NOW), Change::Other);
        assert_eq!(
            set.set(&sid(3), NOW - 1, false, NOW),
            Change::Ended,
            "made to expire"
        );
        // A deleted id made again.
        assert_eq!(set.set(&sid(2), NOW + 3600, false, NOW), Change::Other);
        let check = |set: &SessionSet| {
            assert_eq!(set.standing(&sid(0), NOW), Standing::Usable);
            assert_eq!(set.standing(&sid(1), NOW), Standing::Revoked);
            assert_eq!(set.standing(&sid(2), NOW), Standing::Usable);
            assert_eq!(set.standing(&sid(3), NOW), Standing::Unknown);
            assert_eq!(set.standing(&sid(500), NOW), Standing::Usable);
            assert_eq!(set.standing(&sid(500), NOW + 11), Standing::Unknown);
            assert_eq!(set.counts(NOW), (100, 1));
        };
        check(&set);
        // Merged a little later: the origin moves on, expiries do not.
        let merged = set.merged(NOW + 5);
        check(&merged);
        assert_eq!(merged.len(), 100, "the expired one left out");
        assert!(merged.recent.is_empty());
        let sessions: Vec<Session> = merged.each().collect();
        assert!(sessions.contains(&Session {
            sid: sid(1),
            expires: NOW + 3600,
            revoked: true
        }));
    }

    #[test]
    fn shown_changes_are_seen_before_they_are_settled() {
        let mut set = set_of(100, NOW + 3600, |_| false);
        let new = sid(500);
        let rows = [(sid(1), NOW + 3600, true), (new.clone(), NOW + 60, false)];
        let deleted = [sid(2), sid(2000)];
        let pending = set
            .pending(
                rows.iter().map(|(s, e, r)| (s.as_str(), *e, *r)),
                deleted.iter().map(String::as_str),
            )
            .unwrap();
        assert!(set.show(pending, NOW).is_empty());
        let check = |set: &SessionSet| {
            assert_eq!(set.standing(&sid(0), NOW), Standing::Usable);
            assert_eq!(set.standing(&sid(1), NOW), Standing::Revoked);
            assert_eq!(set.standing(&sid(2), NOW), Standing::Unknown);
            assert_eq!(set.standing(&new, NOW), Standing::Usable);
            assert_eq!(set.standing(&sid(2000), NOW), Standing::Unknown);
        };
        check(&set);
        assert!(set.settled().is_none(), "four changes wait");
        // Settled one by one, the changes still tell what ended.
        assert_eq!(set.settle(&sid(2), NOW), Change::Ended);
        assert_eq!(set.settle(&sid(2000), NOW), Change::Other);
        assert_eq!(set.settle(&new, NOW), Change::Other);
        check(&set);
        assert_eq!(set.showing(), 1);
        // A later row of a session still shown (read by a request meanwhile)
        // settles it first: it ended there, and the row is kept.
        assert_eq!(set.set(&sid(1), NOW + 7200, true, NOW), Change::Ended);
        assert_eq!(set.settle(&sid(1), NOW), Change::Other, "settled already");
        check(&set);
        assert_eq!(set.settled().map(|p| p.0.len()), Some(0));
        check(&set);
        assert_eq!(set.counts(NOW), (100, 1));
        assert!(
            set.each()
                .any(|s| s.sid == sid(1) && s.expires == NOW + 7200)
        );
        // A deletion read meanwhile settles too.
        let later = set
            .pending(
                std::iter::once((sid(3).as_str(), NOW + 3600, true)),
                std::iter::empty(),
            )
            .unwrap();
        assert!(set.show(later, NOW).is_empty());
        assert_eq!(set.remove(&sid(3), NOW), Change::Ended);
        assert_eq!(set.standing(&sid(3), NOW), Standing::Unknown);
        assert_eq!(set.showing(), 0);
        // Ids the issuer does not make are not shown, but applied as they come.
        let odd = [("hand-made".to_owned(), NOW + 60, true)];
        let none = set.pending(
            odd.iter().map(|(s, e, r)| (s.as_str(), *e, *r)),
            std::iter::empty(),
        );
        assert!(none.is_none());
    }

    /// A burst shown before the last one is settled settles the sessions
    /// they share first: a session new in the first and revoked in the
    /// second ends once, and so does one the first revoked.
    #[test]
    fn a_burst_shown_over_another_loses_no_ending() {
        let mut set = set_of(10, NOW + 3600, |_| false);
        let (new, old) = (sid(500), sid(1));
        let show = |set: &mut SessionSet, rows: &[(&str, bool)], deleted: &[&str]| {
            let pending = set
                .pending(
                    rows.iter().map(|(s, revoked)| (*s, NOW + 3600, *revoked)),
                    deleted.iter().copied(),
                )
                .unwrap();
            set.show(pending, NOW)
        };
        assert!(show(&mut set, &[(&new, false), (&old, true)], &[]).is_empty());
        assert_eq!(set.standing(&new, NOW), Standing::Usable);
        let ended = show(&mut set, &[(&new, true)], &[&old]);
        assert_eq!(
            ended.iter().map(sid_text).collect::<Vec<_>>(),
            [old.as_str()]
        );
        assert_eq!(set.standing(&new, NOW), Standing::Revoked);
        assert_eq!(set.standing(&old, NOW), Standing::Unknown);
        assert_eq!(set.settle(&new, NOW), Change::Ended);
        assert_eq!(set.settle(&old, NOW), Change::Other);
        assert_eq!(set.showing(), 0);
        // A set a re-read replaced: settled at once, with what ended.
        assert!(show(&mut set, &[(&sid(2), true), (&sid(3), false)], &[]).is_empty());
        let ended = set.settle_all(NOW);
        assert_eq!(ended.iter().map(sid_text).collect::<Vec<_>>(), [sid(2)]);
        assert_eq!(set.showing(), 0);
        assert_eq!(set.standing(&sid(2), NOW), Standing::Revoked);
    }

    #[test]
    fn a_merge_is_wanted_when_recent_grows_or_base_dies() {
        let mut set = set_of(8192, NOW + 100, |_| false);
        assert!(!set.base_is_dying(NOW));
        assert!(set.base_is_dying(NOW + 101), "all expired");
        for i in 0..2048 {
            set.remove(&sid(i), NOW);
        }
        assert!(set.base_is_dying(NOW), "a quarter deleted");
        for i in 0..MERGE_AT_LEAST as u32 - 1 {
            set.set(&sid(100_000 + i), NOW + 100, false, NOW);
        }
        assert!(!set.recent_is_full());
        set.set(&sid(99_999), NOW + 100, false, NOW);
        assert!(set.recent_is_full());
    }
}
