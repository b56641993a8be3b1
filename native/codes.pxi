# Ticket codes: fixed binary layout, SipHash-2-4 MAC, RFC 4648 base32 text.
#
# Layout v1 (little-endian), authenticated region = bytes [0, 18 + 4*ncomp):
#   0 u8 version | 1 u8 key id | 2 u16 shard | 4 u32 ticket id | 8 u16 product
#   10 u16 first day | 12 u16 last day (venue-local days since 1970-01-01)
#   14 u16 group size | 16 u8 flags | 17 u8 ncomp | 18 u32 x ncomp slot per component
#   then u64 MAC, then, if flags & FLAG_SIGNED, a 64-byte Ed25519 signature over the
#   region (made and checked in Python). The MAC (SipHash-2-4) covers the region and
#   the signature, so the server refuses a code with any bit changed anywhere.

from libc.string cimport memmove

cdef enum:
    MAX_COMP = 8
    MAC_LEN = 8
    SIG_LEN = 64
    HEADER_LEN = 18
    MAX_TEXT = 200
    MAX_CODE_BYTES = HEADER_LEN + 4 * MAX_COMP + MAC_LEN + SIG_LEN   # the longest code
    _CODE_VERSION = 1
    _FLAG_SIGNED = 1
    _FLAG_REAL_NAME = 2
    _DEC_OK = 0              # decode status
    _DEC_MALFORMED = 1
    _DEC_BAD_MAC = 2
    _DEC_UNKNOWN_KEY = 3
    _DEC_OTHER_SHARD = 4     # well-formed, of another shard: not authenticated here

cdef uint32_t _NO_SLOT = 0xFFFFFFFF

CODE_VERSION = _CODE_VERSION
FLAG_SIGNED = _FLAG_SIGNED
FLAG_REAL_NAME = _FLAG_REAL_NAME
NO_SLOT = _NO_SLOT
MAX_COMPONENTS = MAX_COMP
MAX_CODE_LEN = MAX_CODE_BYTES
DEC_OK = _DEC_OK
DEC_MALFORMED = _DEC_MALFORMED
DEC_BAD_MAC = _DEC_BAD_MAC
DEC_UNKNOWN_KEY = _DEC_UNKNOWN_KEY
DEC_OTHER_SHARD = _DEC_OTHER_SHARD

cdef struct CodeInfo:
    uint8_t version
    uint8_t key_id
    uint8_t flags
    uint8_t ncomp
    uint16_t shard
    uint16_t product
    uint16_t group
    uint32_t ticket_id
    int32_t first_day
    int32_t last_day
    uint32_t slots[MAX_COMP]
    int32_t region_len      # length of the authenticated region
    int32_t total_len       # decoded binary length


cdef inline uint64_t _rotl(uint64_t x, int b) noexcept nogil:
    return (x << b) | (x >> (64 - b))


cdef inline uint64_t _load64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v |= (<uint64_t>p[i]) << (8 * i)
    return v


cdef uint64_t siphash24(const uint8_t* key, const uint8_t* m, size_t n) noexcept nogil:
    """SipHash-2-4 with a 128-bit key, 64-bit output (Aumasson & Bernstein)."""
    cdef uint64_t k0 = _load64(key)
    cdef uint64_t k1 = _load64(key + 8)
    cdef uint64_t v0 = 0x736f6d6570736575ULL ^ k0
    cdef uint64_t v1 = 0x646f72616e646f6dULL ^ k1
    cdef uint64_t v2 = 0x6c7967656e657261ULL ^ k0
    cdef uint64_t v3 = 0x7465646279746573ULL ^ k1
    cdef uint64_t b = (<uint64_t>n) << 56
    cdef uint64_t mi
    cdef size_t i, blocks = n // 8
    cdef int r, j
    for i in range(blocks):
        mi = _load64(m + 8 * i)
        v3 ^= mi
        for r in range(2):
            v0 += v1; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)
            v2 += v3; v3 = _rotl(v3, 16); v3 ^= v2
            v0 += v3; v3 = _rotl(v3, 21); v3 ^= v0
            v2 += v1; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)
        v0 ^= mi
    for j in range(<int>(n & 7)):
        b |= (<uint64_t>m[8 * blocks + j]) << (8 * j)
    v3 ^= b
    for r in range(2):
        v0 += v1; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)
        v2 += v3; v3 = _rotl(v3, 16); v3 ^= v2
        v0 += v3; v3 = _rotl(v3, 21); v3 ^= v0
        v2 += v1; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)
    v0 ^= b
    v2 ^= 0xff
    for r in range(4):
        v0 += v1; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)
        v2 += v3; v3 = _rotl(v3, 16); v3 ^= v2
        v0 += v3; v3 = _rotl(v3, 21); v3 ^= v0
        v2 += v1; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)
    return v0 ^ v1 ^ v2 ^ v3


def siphash(bytes key, bytes message):
    """SipHash-2-4 of `message` under a 16-byte `key` (exposed for tests)."""
    if len(key) != 16:
        raise ValueError("SipHash key must be 16 bytes")
    return siphash24(<const uint8_t*>PyBytes_AS_STRING(key),
                     <const uint8_t*>PyBytes_AS_STRING(message), len(message))


cdef const char* _B32 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
cdef signed char _B32REV[256]
memset(_B32REV, -1, 256)
for _i in range(32):
    # upper case only: one accepted text per code, the one the encoder renders (offline
    # gates refuse any other text too: proto/turnstile/ticketcode.py)
    _B32REV[<unsigned char>_B32[_i]] = _i


def b32encode(bytes data):
    """RFC 4648 base32, upper case, no padding (fits QR alphanumeric mode)."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t outlen = (n * 8 + 4) // 5
    out = PyBytes_FromStringAndSize(NULL, outlen)
    cdef char* o = PyBytes_AS_STRING(out)
    cdef uint64_t acc = 0
    cdef int bits = 0
    cdef Py_ssize_t i, k = 0
    for i in range(n):
        acc = (acc << 8) | p[i]
        bits += 8
        while bits >= 5:
            bits -= 5
            o[k] = _B32[(acc >> bits) & 31]
            k += 1
    if bits > 0:
        o[k] = _B32[(acc << (5 - bits)) & 31]
        k += 1
    return out.decode("ascii")


cdef Py_ssize_t _b32decode(const char* s, Py_ssize_t n, uint8_t* out, Py_ssize_t cap) noexcept nogil:
    """Decode canonical unpadded base32 into out; -1 on any malformed input."""
    cdef uint64_t acc = 0
    cdef int bits = 0
    cdef Py_ssize_t i, k = 0
    cdef signed char v
    if n % 8 in (1, 3, 6):
        return -1
    for i in range(n):
        v = _B32REV[<unsigned char>s[i]]
        if v < 0:
            return -1
        acc = (acc << 5) | <uint64_t>v
        bits += 5
        if bits >= 8:
            bits -= 8
            if k >= cap:
                return -1
            out[k] = <uint8_t>((acc >> bits) & 0xff)
            k += 1
    if bits > 0 and (acc & ((1ULL << bits) - 1)) != 0:
        return -1      # non-canonical: trailing bits must be zero
    return k


def b32decode(str text):
    """Decode canonical unpadded base32; ValueError if malformed."""
    cdef bytes raw = text.encode("ascii", "replace")
    cdef uint8_t buf[512]
    if len(raw) > 800:
        raise ValueError("base32 text too long")
    cdef Py_ssize_t k = _b32decode(raw, len(raw), buf, 512)
    if k < 0:
        raise ValueError("malformed base32")
    return PyBytes_FromStringAndSize(<char*>buf, k)


cdef inline uint16_t _ld16(const uint8_t* p) noexcept nogil:
    return <uint16_t>(p[0] | (p[1] << 8))


cdef inline uint32_t _ld32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef class Codec:
    """MAC keys by key id, and the binary/text codec of ticket codes.

    A key id may be *active* (codes are issued and accepted) or *accepting*
    (accepted only, during a rotation overlap); any other id is unknown.
    """
    cdef uint8_t keys[256][16]
    cdef uint8_t state[256]       # 0 unknown, 1 accepting, 2 active

    def __cinit__(self):
        memset(self.keys, 0, sizeof(self.keys))
        memset(self.state, 0, sizeof(self.state))

    def set_key(self, int key_id, bytes mac_key, bint active):
        if not 0 <= key_id < 256 or len(mac_key) != 16:
            raise ValueError("key id must be 0..255 and the MAC key 16 bytes")
        memcpy(self.keys[key_id], PyBytes_AS_STRING(mac_key), 16)
        self.state[key_id] = 2 if active else 1

    def drop_key(self, int key_id):
        self.state[key_id] = 0
        memset(self.keys[key_id], 0, 16)

    def key_state(self, int key_id):
        return self.state[key_id]

    def region(self, int key_id, int shard, uint32_t ticket_id, int product, int first_day,
               int last_day, int group, int flags, slots):
        """The authenticated region of a code: version and payload."""
        cdef int ncomp = len(slots)
        if self.state[key_id] == 0:
            raise ValueError(f"unknown key id {key_id}")
        if not 1 <= ncomp <= MAX_COMP:
            raise ValueError("a code has 1 to 8 components")
        out = bytearray(HEADER_LEN + 4 * ncomp)
        out[0] = _CODE_VERSION
        out[1] = key_id
        out[2:4] = shard.to_bytes(2, "little")
        out[4:8] = ticket_id.to_bytes(4, "little")
        out[8:10] = product.to_bytes(2, "little")
        out[10:12] = first_day.to_bytes(2, "little")
        out[12:14] = last_day.to_bytes(2, "little")
        out[14:16] = group.to_bytes(2, "little")
        out[16] = flags
        out[17] = ncomp
        for i, s in enumerate(slots):
            out[18 + 4 * i: 22 + 4 * i] = (<uint32_t>s).to_bytes(4, "little")
        return bytes(out)

    def seal(self, int key_id, bytes region, bytes signature=b""):
        """region | MAC | signature, the MAC taken over region and signature."""
        if self.state[key_id] == 0:
            raise ValueError(f"unknown key id {key_id}")
        cdef bytes body = region + signature
        cdef uint64_t mac = siphash24(self.keys[key_id], <const uint8_t*>PyBytes_AS_STRING(body),
                                      len(body))
        return region + mac.to_bytes(8, "little") + signature

    cdef int _decode(self, const char* text, Py_ssize_t n, CodeInfo* ci, int shard) noexcept nogil:
        """Decode and authenticate one code's text (base32 of its binary form): see
        _decode_bin."""
        cdef uint8_t buf[160]
        if n < 8 or n > MAX_TEXT:
            return _DEC_MALFORMED
        return self._decode_bin(buf, _b32decode(text, n, buf, 160), ci, shard)

    cdef int _decode_bin(self, uint8_t* buf, Py_ssize_t k, CodeInfo* ci, int shard) noexcept nogil:
        """Decode and authenticate one code of `shard` (-1: of any shard) from its k
        binary bytes in buf (which it may overwrite; at least k bytes). A code whose
        layout is valid but which names another shard is _DEC_OTHER_SHARD, decided
        before the key and MAC: that shard's keys are not here to check it."""
        cdef Py_ssize_t i
        cdef uint64_t mac
        if k < HEADER_LEN + 4 + MAC_LEN or buf[0] != _CODE_VERSION:
            return _DEC_MALFORMED
        ci.version = buf[0]
        ci.key_id = buf[1]
        ci.shard = _ld16(buf + 2)
        ci.ticket_id = _ld32(buf + 4)
        ci.product = _ld16(buf + 8)
        ci.first_day = _ld16(buf + 10)
        ci.last_day = _ld16(buf + 12)
        ci.group = _ld16(buf + 14)
        ci.flags = buf[16]
        ci.ncomp = buf[17]
        if ci.ncomp < 1 or ci.ncomp > MAX_COMP or ci.group < 1 or ci.last_day < ci.first_day:
            return _DEC_MALFORMED
        if ci.flags & ~(_FLAG_SIGNED | _FLAG_REAL_NAME):
            return _DEC_MALFORMED
        ci.region_len = HEADER_LEN + 4 * ci.ncomp
        ci.total_len = ci.region_len + MAC_LEN + (SIG_LEN if ci.flags & _FLAG_SIGNED else 0)
        if k != ci.total_len:
            return _DEC_MALFORMED
        for i in range(ci.ncomp):
            ci.slots[i] = _ld32(buf + HEADER_LEN + 4 * i)
        if shard >= 0 and ci.shard != shard:
            return _DEC_OTHER_SHARD
        if self.state[ci.key_id] == 0:
            return _DEC_UNKNOWN_KEY
        # the MAC covers region and signature: move the MAC out of the way, hash, compare
        mac = _load64(buf + ci.region_len)
        if ci.total_len > ci.region_len + MAC_LEN:
            memmove(buf + ci.region_len, buf + ci.region_len + MAC_LEN, SIG_LEN)   # overlapping
        if siphash24(self.keys[ci.key_id], buf, ci.total_len - MAC_LEN) != mac:
            return _DEC_BAD_MAC
        return _DEC_OK

    def decode(self, str text, int shard=-1):
        """(status, fields) where fields is a dict when status == _DEC_OK, else None.
        With `shard`, a well-formed code of another shard is DEC_OTHER_SHARD."""
        cdef CodeInfo ci
        cdef bytes raw = text.encode("ascii", "replace")
        cdef int st = self._decode(raw, len(raw), &ci, shard)
        if st != _DEC_OK:
            return st, None
        return st, {
            "version": ci.version, "key_id": ci.key_id, "shard": ci.shard,
            "ticket_id": ci.ticket_id, "product": ci.product, "first_day": ci.first_day,
            "last_day": ci.last_day, "group": ci.group, "flags": ci.flags,
            "slots": [ci.slots[i] for i in range(ci.ncomp)],
            "region_len": ci.region_len,
        }

    def decode_ids(self, codes, int shard):
        """Decode many codes for one shard: array('q') of base ticket ids, -1 where a
        code is malformed or unauthentic, -2 where it is a well-formed code of another
        shard (the answers of Tickets.verify: FORGED, UNKNOWN)."""
        cdef CodeInfo ci
        out = _array.array("q", bytes(8 * len(codes)))
        cdef int64_t[:] o = out
        cdef Py_ssize_t i = 0
        cdef bytes raw
        cdef int st
        for t in codes:
            raw = (<str>t).encode("ascii", "replace")
            st = self._decode(raw, len(raw), &ci, shard)
            if st == _DEC_OK:
                o[i] = ci.ticket_id
            elif st == _DEC_OTHER_SHARD:
                o[i] = -2
            else:
                o[i] = -1
            i += 1
        return out

    def decode_packed_ids(self, const uint8_t[::1] codes, Py_ssize_t size, int shard):
        """decode_ids of codes in their binary form (what the text's base32 encodes),
        `size` bytes each, concatenated in `codes`: the same checks and answers, in one
        loop over the buffer. ValueError if size is not 1..MAX_CODE_LEN or the buffer
        is not a whole number of codes."""
        cdef Py_ssize_t total = codes.shape[0], n, i
        if not 1 <= size <= MAX_CODE_BYTES:
            raise ValueError(f"a code is 1 to {MAX_CODE_BYTES} bytes")
        if total % size:
            raise ValueError(f"{total} bytes are not a whole number of {size}-byte codes")
        n = total // size
        out = _array.array("q", bytes(8 * n))
        cdef int64_t[:] o = out
        cdef CodeInfo ci
        cdef uint8_t buf[160]
        cdef const uint8_t* p = &codes[0] if total else NULL
        cdef int st
        with nogil:
            for i in range(n):
                memcpy(buf, p + i * size, size)        # _decode_bin may overwrite it
                st = self._decode_bin(buf, size, &ci, shard)
                if st == _DEC_OK:
                    o[i] = ci.ticket_id
                elif st == _DEC_OTHER_SHARD:
                    o[i] = -2
                else:
                    o[i] = -1
        return out
