-- HMAC-SHA256 through Debian's lua-luaossl.
local hmac = require "openssl.hmac"

return function(key, data)
    return hmac.new(key, "sha256"):final(data)
end
