-- HMAC-SHA256 through LuaJIT's FFI into libcrypto (already linked by nginx).
local ffi = require "ffi"

ffi.cdef [[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md,
                    unsigned int *md_len);
]]

local ok, crypto = pcall(function() return ffi.C.EVP_sha256 and ffi.C end)
if not ok or not crypto then
    crypto = ffi.load("libcrypto.so.3")
end
local sha256 = crypto.EVP_sha256()
local out = ffi.new("unsigned char[32]")
local out_len = ffi.new("unsigned int[1]")

return function(key, data)
    crypto.HMAC(sha256, key, #key, data, #data, out, out_len)
    return ffi.string(out, out_len[0])
end
