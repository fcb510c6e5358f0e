-- Shared by both HS256 peers: find the token, split it, check the signature
-- with the given HMAC function, then the claims. No revocation check.
local b64 = require "ngx.base64"
local cjson = require "cjson.safe"

local M = {}

local key

function M.load_key(path)
    local f = assert(io.open(path, "r"))
    key = f:read("*a"):gsub("^%s+", ""):gsub("%s+$", "")
    f:close()
end

local function token_of_request()
    local args = ngx.req.get_uri_args(8)
    local t = args.authorization or args.token
    if type(t) ~= "string" then
        t = ngx.var.http_authorization
    end
    if not t or t == "" then
        return nil
    end
    local bare = t:match("^[Bb][Ee][Aa][Rr][Ee][Rr] (.+)$")
    return bare or t
end

-- hmac(key, data) -> raw 32-byte MAC
function M.check(hmac)
    local token = token_of_request()
    if not token then
        return ngx.exit(401)
    end
    local h, p, s = token:match("^([%w_-]+)%.([%w_-]+)%.([%w_-]+)$")
    if not h then
        return ngx.exit(401)
    end
    local header = cjson.decode(b64.decode_base64url(h) or "")
    if type(header) ~= "table" or header.alg ~= "HS256" then
        return ngx.exit(401)
    end
    local expected = b64.encode_base64url(hmac(key, h .. "." .. p))
    if expected ~= s then
        return ngx.exit(401)
    end
    local claims = cjson.decode(b64.decode_base64url(p) or "")
    if type(claims) ~= "table" or type(claims.exp) ~= "number" then
        return ngx.exit(401)
    end
    if claims.exp + 30 < ngx.time() then
        return ngx.exit(401)
    end
    if claims.type ~= "access" then
        return ngx.exit(403)
    end
end

return M
