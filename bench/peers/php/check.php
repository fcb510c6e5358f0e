<?php
// The original module's stack shape: PHP checks HS256 for nginx auth_request.
// Same checks as the Lua peers; no revocation.
function b64url_decode(string $s): string|false {
    return base64_decode(strtr($s, '-_', '+/'), true);
}
function b64url_encode(string $s): string {
    return rtrim(strtr(base64_encode($s), '+/', '-_'), '=');
}
function token(): ?string {
    $t = $_GET['authorization'] ?? $_GET['token'] ?? ($_SERVER['HTTP_AUTHORIZATION'] ?? '');
    if ($t === '') { return null; }
    if (stripos($t, 'bearer ') === 0) { $t = substr($t, 7); }
    return $t;
}

$key = trim(file_get_contents(getenv('SOFTPHONE_KEY_FILE')));
$t = token();
$parts = $t === null ? [] : explode('.', $t);
if (count($parts) !== 3) { http_response_code(401); exit; }
[$h, $p, $s] = $parts;
$header = json_decode((string) b64url_decode($h), true);
if (!is_array($header) || ($header['alg'] ?? '') !== 'HS256') { http_response_code(401); exit; }
if (!hash_equals(b64url_encode(hash_hmac('sha256', "$h.$p", $key, true)), $s)) { http_response_code(401); exit; }
$claims = json_decode((string) b64url_decode($p), true);
if (!is_array($claims) || !is_int($claims['exp'] ?? null) || $claims['exp'] + 30 < time()) { http_response_code(401); exit; }
if (($claims['type'] ?? '') !== 'access') { http_response_code(403); exit; }
http_response_code(200);
