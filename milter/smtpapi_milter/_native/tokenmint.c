/* Link tokens minted in C: the same bytes as tokens.py's pure-Python path (its reference).
 *
 * A newsletter copy has dozens of click links and each token costs a compression with a
 * preset dictionary, an AES-SIV seal and a base64url encoding; in Python the glue between
 * those library calls cost as much as the calls (bench/milter_cpu.py). Here one token is one
 * call: the link's JSON fields are written straight into the window after the copy's head,
 * compressed by the encoder below, and one cipher context per key is kept for every seal.
 *
 * Compression: tokens.py ("minting's deflate") specifies the stream exactly, one
 * fixed-Huffman block from a greedy parse over ZDICT_V1 + plaintext, and gives the reasons
 * (zlib's deflate spent ~4.6 of a token's 6.4 us building Huffman trees for its block's end).
 * Candidates are found through hash chains of the positions' next 3 bytes; a hash collision
 * costs a comparison and is not counted as a candidate, so the chains give exactly the
 * specified candidates whatever the hash. Its multiplier is drawn at random per Minter, so no
 * crafted text can make one chain long. A copy's head is indexed and parsed once (Head); per
 * token the tail's positions are indexed and unindexed afterwards.
 *
 * Token layout and plaintext: see tokens.py. AES-SIV is RFC 5297 ("AES-128-SIV" for the
 * 32-byte keys used here, as cryptography's AESSIV does). OpenSSL's SIV context cannot be
 * reset for another message, only copied (allocations, ~1.1 us a seal), so the seal is built
 * here from its parts on two keyed contexts that can: S2V with CMAC (RFC 4493) on AES-CBC,
 * then AES-CTR. The associated data is only ever one of the two headers, so its share of
 * S2V is worked out once per key. At start the result is compared with OpenSSL's own
 * AES-SIV on probe messages; should they ever differ, every seal goes through OpenSSL's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#define TAG_SIZE 16

/* ---- growable byte buffer (PyMem), so no input can overflow a fixed one ---- */

typedef struct {
    unsigned char *data;
    size_t len, cap;
} Buf;

static int buf_reserve(Buf *b, size_t extra) {
    if (extra > PY_SSIZE_T_MAX - b->len) {
        PyErr_NoMemory();
        return -1;
    }
    size_t need = b->len + extra;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > PY_SSIZE_T_MAX / 2 ? need : cap * 2;
    unsigned char *data = PyMem_Realloc(b->data, cap);
    if (!data) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const void *src, size_t n) {
    if (n == 0) return 0; /* memcpy to a buffer not yet allocated (NULL) is undefined */
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, src, n);
    b->len += n;
    return 0;
}

/* What json.encoder.encode_basestring writes for ``s`` (ensure_ascii=False: quotes, the
 * two-character escapes, \u00xx for other C0 controls, everything else as is), encoded as
 * UTF-8 with surrogatepass (a lone surrogate becomes its three-byte form). */
static int put_json_string(Buf *b, PyObject *s) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    /* 6 bytes per character covers the longest escape and the longest UTF-8 (4). */
    if ((size_t)n > (PY_SSIZE_T_MAX - 2) / 6) {
        PyErr_NoMemory();
        return -1;
    }
    if (buf_reserve(b, (size_t)n * 6 + 2) < 0) return -1;
    unsigned char *p = b->data + b->len;
    static const char hex[] = "0123456789abcdef";
    *p++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80) {
            switch (c) {
            case '"': *p++ = '\\'; *p++ = '"'; break;
            case '\\': *p++ = '\\'; *p++ = '\\'; break;
            case '\b': *p++ = '\\'; *p++ = 'b'; break;
            case '\f': *p++ = '\\'; *p++ = 'f'; break;
            case '\n': *p++ = '\\'; *p++ = 'n'; break;
            case '\r': *p++ = '\\'; *p++ = 'r'; break;
            case '\t': *p++ = '\\'; *p++ = 't'; break;
            default:
                if (c < 0x20) {
                    *p++ = '\\'; *p++ = 'u'; *p++ = '0'; *p++ = '0';
                    *p++ = hex[c >> 4]; *p++ = hex[c & 15];
                } else {
                    *p++ = (unsigned char)c;
                }
            }
        } else if (c < 0x800) {
            *p++ = (unsigned char)(0xC0 | (c >> 6));
            *p++ = (unsigned char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) { /* surrogates included: surrogatepass */
            *p++ = (unsigned char)(0xE0 | (c >> 12));
            *p++ = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            *p++ = (unsigned char)(0x80 | (c & 0x3F));
        } else {
            *p++ = (unsigned char)(0xF0 | (c >> 18));
            *p++ = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
            *p++ = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            *p++ = (unsigned char)(0x80 | (c & 0x3F));
        }
    }
    *p++ = '"';
    b->len = (size_t)(p - b->data);
    return 0;
}

/* ---- the encoder: one fixed-Huffman DEFLATE block (tokens.py: "minting's deflate") ---- */

#define MIN_MATCH 3
#define MAX_MATCH 258
#define MAX_DISTANCE 32768
#define MAX_CHAIN 32 /* candidates compared per position, at most (the spec's cap) */
#define HASH_BITS 12 /* 16 KiB of chain heads per copy: a token's window is ~600 positions */
#define HASH_SIZE (1 << HASH_BITS)
#define MAX_WINDOW ((size_t)INT32_MAX) /* positions are int32_t */

/* Codes as written: Huffman codes reversed (the stream takes them most significant bit first),
 * a length's extra bits above its code. */
static uint16_t literal_code[256];
static uint8_t literal_bits[256];
static uint32_t length_code[MAX_MATCH + 1];
static uint8_t length_bits[MAX_MATCH + 1];
static uint8_t distance_code[30]; /* the 5-bit codes reversed */
#define END_OF_BLOCK_BITS 7       /* symbol 256: the 7-bit code 0 */

static unsigned reversed(unsigned code, int width) {
    unsigned r = 0;
    while (width--) {
        r = (r << 1) | (code & 1);
        code >>= 1;
    }
    return r;
}

static void init_codes(void) {
    static const uint16_t base[29] = {3,  4,  5,  6,  7,  8,  9,  10,  11,  13,  15,  17,  19,  23, 27,
                                      31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const uint8_t extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    for (unsigned b = 0; b < 256; b++) {
        if (b < 144) {
            literal_code[b] = (uint16_t)reversed(0x30 + b, 8);
            literal_bits[b] = 8;
        } else {
            literal_code[b] = (uint16_t)reversed(0x190 + b - 144, 9);
            literal_bits[b] = 9;
        }
    }
    for (unsigned len = MIN_MATCH; len <= MAX_MATCH; len++) {
        unsigned slot = 0;
        while (slot + 1 < 29 && base[slot + 1] <= len) slot++;
        unsigned symbol = 257 + slot, code, width;
        if (symbol < 280) {
            code = reversed(symbol - 256, 7);
            width = 7;
        } else {
            code = reversed(0xC0 + symbol - 280, 8);
            width = 8;
        }
        length_code[len] = code | (len - base[slot]) << width;
        length_bits[len] = (uint8_t)(width + extra[slot]);
    }
    for (unsigned c = 0; c < 30; c++) distance_code[c] = (uint8_t)reversed(c, 5);
}

/* Bits not yet whole 32-bit words: least significant first, as the stream takes them. */
typedef struct {
    uint64_t acc;
    unsigned count;
} Bits;

/* The caller reserved room in ``out`` (9 bits per plaintext byte at most, plus the ends). */
static inline void put_bits(Buf *out, Bits *b, uint32_t value, unsigned count) {
    b->acc |= (uint64_t)value << b->count;
    b->count += count; /* < 32 + 18 */
    if (b->count >= 32) {
        unsigned char *q = out->data + out->len;
        q[0] = (unsigned char)b->acc;
        q[1] = (unsigned char)(b->acc >> 8);
        q[2] = (unsigned char)(b->acc >> 16);
        q[3] = (unsigned char)(b->acc >> 24);
        out->len += 4;
        b->acc >>= 32;
        b->count -= 32;
    }
}

static inline void put_match(Buf *out, Bits *b, size_t len, size_t distance) {
    put_bits(out, b, length_code[len], length_bits[len]);
    unsigned x = (unsigned)distance - 1; /* codes 0-3: 1-4; then two per power of two */
    if (x < 4) {
        put_bits(out, b, distance_code[x], 5);
    } else {
        unsigned top = 31 - (unsigned)__builtin_clz(x), width = top - 1;
        unsigned code = 2 * top + ((x >> width) & 1);
        put_bits(out, b, distance_code[code] | (x & ((1u << width) - 1)) << 5, 5 + width);
    }
}

/* End-of-block and the zero bits to a byte. */
static void put_end(Buf *out, Bits *b) {
    put_bits(out, b, 0, END_OF_BLOCK_BITS);
    while (b->count > 0) {
        out->data[out->len++] = (unsigned char)b->acc;
        b->acc >>= 8;
        b->count = b->count > 8 ? b->count - 8 : 0;
    }
}

/* One window: the dictionary, a head, and during a token its tail; with its hash chains. */
typedef struct {
    Buf win;
    int32_t *prev; /* per indexed position: the previous one with the same hash, or -1 */
    size_t prev_cap;
    uint32_t multiplier; /* odd, random per Minter */
    size_t dict_len, head_end;
    size_t resume;  /* a token's parse starts here: the head's symbols before it are final */
    size_t indexed; /* positions before it are in the chains */
    Buf bits;       /* the block up to ``resume``: whole 32-bit words, then ``rest`` */
    Bits rest;
    int32_t chain[HASH_SIZE]; /* newest position of each hash, or -1 */
} Window;

static inline size_t hash3(const Window *s, const unsigned char *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
    return (uint32_t)(v * s->multiplier) >> (32 - HASH_BITS);
}

static int window_reserve_prev(Window *s, size_t n) {
    if (n <= s->prev_cap) return 0;
    size_t cap = s->prev_cap ? s->prev_cap : 1024;
    while (cap < n) cap *= 2;
    int32_t *prev = PyMem_Realloc(s->prev, cap * sizeof *prev);
    if (!prev) {
        PyErr_NoMemory();
        return -1;
    }
    s->prev = prev;
    s->prev_cap = cap;
    return 0;
}

/* Index the positions before ``p`` (their 3 bytes are in the window: prev has room). */
static inline void index_to(Window *s, size_t p) {
    const unsigned char *w = s->win.data;
    for (; s->indexed < p; s->indexed++) {
        size_t h = hash3(s, w + s->indexed);
        s->prev[s->indexed] = s->chain[h];
        s->chain[h] = (int32_t)s->indexed;
    }
}

/* Take the positions from ``mark`` on out of the chains again, newest first. */
static void unindex_to(Window *s, size_t mark) {
    while (s->indexed > mark) {
        s->indexed--;
        s->chain[hash3(s, s->win.data + s->indexed)] = s->prev[s->indexed];
    }
}

/* How many bytes from ``a`` equal those from ``b``, at most ``limit``. */
static inline size_t common_length(const unsigned char *a, const unsigned char *b, size_t limit) {
    size_t n = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (n + 8 <= limit) {
        uint64_t x, y;
        memcpy(&x, a + n, 8);
        memcpy(&y, b + n, 8);
        if (x != y) return n + ((unsigned)__builtin_ctzll(x ^ y) >> 3);
        n += 8;
    }
#endif
    while (n < limit && a[n] == b[n]) n++;
    return n;
}

/* The longest match at ``p`` (p + 3 <= end, positions before p indexed): its length (0: none)
 * and distance, as tokens.py specifies. */
static inline size_t longest_match(const Window *s, size_t p, size_t end, size_t *distance) {
    const unsigned char *w = s->win.data;
    size_t limit = end - p < MAX_MATCH ? end - p : MAX_MATCH;
    size_t best = 0;
    unsigned candidates = 0;
    for (int32_t j = s->chain[hash3(s, w + p)]; j >= 0; j = s->prev[j]) {
        if (p - (size_t)j > MAX_DISTANCE) break; /* chains run from the newest */
        const unsigned char *c = w + j;
        if (c[0] != w[p] || c[1] != w[p + 1] || c[2] != w[p + 2]) continue; /* a collision */
        if (++candidates > MAX_CHAIN) break;
        if (c[best] != w[p + best]) continue; /* cannot beat the best */
        size_t len = MIN_MATCH + common_length(c + MIN_MATCH, w + p + MIN_MATCH, limit - MIN_MATCH);
        if (len > best) {
            best = len;
            *distance = p - (size_t)j;
            if (len == limit) break;
        }
    }
    return best;
}

/* Symbols for window bytes [*pos, end) into ``out``/``b``. ``head``: ``end`` is the head's end;
 * stop at the first symbol that could depend on what follows. ``stop_bits``: stop (return 1)
 * once the output has this many bits (it cannot be shorter than the plaintext then). */
static int parse(Window *s, Buf *out, Bits *b, size_t *pos, size_t end, int head,
                 size_t stop_bits) {
    const unsigned char *w = s->win.data;
    size_t p = *pos;
    int stopped = 0;
    while (p < end) {
        size_t len = 0, distance = 0;
        if (p + MIN_MATCH <= end) {
            index_to(s, p);
            len = longest_match(s, p, end, &distance);
            if (head && len == end - p && len < MAX_MATCH) break; /* the tail may lengthen it */
        } else if (head) {
            break;
        }
        if (len) {
            put_match(out, b, len, distance);
            p += len;
        } else {
            put_bits(out, b, literal_code[w[p]], literal_bits[w[p]]);
            p++;
        }
        if (out->len * 8 + b->count >= stop_bits) {
            stopped = 1;
            break;
        }
    }
    *pos = p;
    return stopped;
}

/* Room for the block's symbols from window position ``from`` to ``to``. */
static int reserve_symbols(Buf *out, size_t from, size_t to) {
    size_t n = to - from;
    if (n > (PY_SSIZE_T_MAX - 64) / 2) {
        PyErr_NoMemory();
        return -1;
    }
    return buf_reserve(out, 2 * n + 16); /* 9 bits a byte at most, plus the ends */
}

/* A window of just ``dict`` (the Minter's; Heads start as copies of it). */
static int window_init(Window *s, const unsigned char *dict, size_t dict_len,
                       uint32_t multiplier) {
    memset(s, 0, offsetof(Window, chain));
    for (size_t i = 0; i < HASH_SIZE; i++) s->chain[i] = -1;
    s->multiplier = multiplier | 1;
    if (dict_len > MAX_WINDOW / 2) {
        PyErr_SetString(PyExc_ValueError, "dictionary too large");
        return -1;
    }
    if (buf_put(&s->win, dict, dict_len) < 0 || window_reserve_prev(s, dict_len + 1) < 0
        || buf_reserve(&s->bits, 16) < 0)
        return -1;
    s->dict_len = s->head_end = s->resume = dict_len;
    /* a position is indexed once its 3 bytes are there: the dictionary's last two wait */
    index_to(s, dict_len >= MIN_MATCH - 1 ? dict_len - (MIN_MATCH - 1) : 0);
    s->rest.acc = 3; /* BFINAL=1, BTYPE=01 (fixed codes) */
    s->rest.count = 3;
    return 0;
}

static int window_copy(Window *s, const Window *from) {
    memcpy(s, from, sizeof *s);
    s->win = (Buf){0};
    s->bits = (Buf){0};
    s->prev = NULL;
    s->prev_cap = 0;
    if (buf_put(&s->win, from->win.data, from->win.len) < 0
        || window_reserve_prev(s, from->indexed + 1) < 0
        || buf_put(&s->bits, from->bits.data, from->bits.len) < 0)
        return -1;
    memcpy(s->prev, from->prev, from->indexed * sizeof *s->prev);
    return 0;
}

static void window_free(Window *s) {
    PyMem_Free(s->win.data);
    PyMem_Free(s->prev);
    PyMem_Free(s->bits.data);
    s->win = (Buf){0};
    s->bits = (Buf){0};
    s->prev = NULL;
    s->prev_cap = 0;
}

/* Append the head (the window holds just the dictionary) and parse it as far as it is final. */
static int window_add_head(Window *s, const unsigned char *head, size_t len) {
    if (len > MAX_WINDOW - s->win.len) {
        PyErr_SetString(PyExc_ValueError, "head too large");
        return -1;
    }
    if (buf_put(&s->win, head, len) < 0 || window_reserve_prev(s, s->win.len) < 0
        || reserve_symbols(&s->bits, s->dict_len, s->win.len) < 0)
        return -1;
    s->head_end = s->win.len;
    parse(s, &s->bits, &s->rest, &s->resume, s->head_end, 1, SIZE_MAX);
    return 0;
}

/* Shrink what one long payload grew, so a Head or Minter does not keep it. */
static void window_trim(Window *s) {
    size_t keep = s->head_end + 4096;
    if (s->win.cap > keep && s->win.cap > ((size_t)1 << 16)) {
        unsigned char *data = PyMem_Realloc(s->win.data, keep);
        if (data) {
            s->win.data = data;
            s->win.cap = keep;
        }
    }
    if (s->prev_cap > keep && s->prev_cap > ((size_t)1 << 16)) {
        int32_t *prev = PyMem_Realloc(s->prev, keep * sizeof *prev);
        if (prev) {
            s->prev = prev;
            s->prev_cap = keep;
        }
    }
}

/* ---- Minter: one signing key ---- */

typedef struct {
    PyObject_HEAD
    EVP_CIPHER *cipher;
    EVP_CIPHER_CTX *keyed; /* OpenSSL's AES-SIV, keyed once; copied per seal (the fallback) */
    EVP_CIPHER_CTX *work;
    EVP_CIPHER *cbc_cipher, *ctr_cipher;
    EVP_CIPHER_CTX *cbc; /* AES-CBC with the MAC half of the key, no padding: CMAC */
    EVP_CIPHER_CTX *ctr; /* AES-CTR with the other half */
    unsigned char sub1[16], sub2[16]; /* CMAC's subkeys */
    unsigned char d_raw[16], d_deflate[16]; /* S2V after each header */
    int fast; /* the seal built here agreed with OpenSSL's at start */
    Buf mac;
    unsigned char raw_header[2 + 255];
    unsigned char deflate_header[2 + 255];
    size_t header_len;
    int fresh_ok;
    Buf packed, token;
    Window fresh; /* the dictionary alone: mint() appends its payload, Heads copy it */
} Minter;

static PyTypeObject MinterType;
static PyTypeObject HeadType;

static void minter_dealloc(Minter *self) {
    if (self->fresh_ok) window_free(&self->fresh);
    EVP_CIPHER_CTX_free(self->keyed);
    EVP_CIPHER_CTX_free(self->work);
    EVP_CIPHER_free(self->cipher);
    EVP_CIPHER_CTX_free(self->cbc);
    EVP_CIPHER_CTX_free(self->ctr);
    EVP_CIPHER_free(self->cbc_cipher);
    EVP_CIPHER_free(self->ctr_cipher);
    PyMem_Free(self->mac.data);
    PyMem_Free(self->packed.data);
    PyMem_Free(self->token.data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int set_error_openssl(const char *what) {
    PyErr_Format(PyExc_RuntimeError, "OpenSSL: %s failed", what);
    return -1;
}

static const unsigned char ZERO16[16];

/* RFC 5297 dbl: multiplication by x in GF(2^128) (shift left, reduce by 0x87). */
static void dbl16(unsigned char *b) {
    int carry = b[0] >> 7;
    for (int i = 0; i < 15; i++) b[i] = (unsigned char)((b[i] << 1) | (b[i + 1] >> 7));
    b[15] = (unsigned char)(b[15] << 1);
    if (carry) b[15] ^= 0x87;
}

static void xor16(unsigned char *a, const unsigned char *b) {
    for (int i = 0; i < 16; i++) a[i] ^= b[i];
}

/* CMAC (RFC 4493) of the ``n`` bytes at the start of self->mac (reserved to a whole number of
 * blocks by the caller, and overwritten), into ``out``. */
static int cmac_in_place(Minter *self, size_t n, unsigned char *out) {
    size_t blocks = n ? (n + 15) / 16 : 1;
    unsigned char *b = self->mac.data;
    unsigned char *last = b + (blocks - 1) * 16;
    if (n && n % 16 == 0) {
        xor16(last, self->sub1);
    } else {
        size_t r = n - (blocks - 1) * 16;
        last[r] = 0x80;
        memset(last + r + 1, 0, 15 - r);
        xor16(last, self->sub2);
    }
    int outl = 0;
    if (blocks * 16 > INT_MAX || EVP_EncryptInit_ex(self->cbc, NULL, NULL, NULL, ZERO16) != 1
        || EVP_EncryptUpdate(self->cbc, b, &outl, b, (int)(blocks * 16)) != 1)
        return set_error_openssl("CMAC");
    memcpy(out, last, 16);
    return 0;
}

static int cmac(Minter *self, const unsigned char *m, size_t n, unsigned char *out) {
    self->mac.len = 0;
    if (buf_reserve(&self->mac, (n / 16 + 1) * 16) < 0) return -1;
    if (n) memcpy(self->mac.data, m, n);
    return cmac_in_place(self, n, out);
}

/* AES-SIV of ``p`` (``n`` bytes) whose S2V after its one associated data is ``d``: the
 * synthetic IV into ``tag``, the ciphertext (``n`` bytes) into ``ct``. */
static int siv_seal(Minter *self, const unsigned char *d, const unsigned char *p, size_t n,
                    unsigned char *tag, unsigned char *ct) {
    if (n > INT_MAX - 32) {
        PyErr_SetString(PyExc_ValueError, "payload too large");
        return -1;
    }
    self->mac.len = 0;
    if (buf_reserve(&self->mac, (n / 16 + 2) * 16) < 0) return -1;
    unsigned char *t = self->mac.data;
    size_t tlen;
    if (n >= 16) { /* T = P xorend D */
        memcpy(t, p, n);
        xor16(t + n - 16, d);
        tlen = n;
    } else { /* T = dbl(D) xor pad(P) */
        memcpy(t, d, 16);
        dbl16(t);
        for (size_t i = 0; i < n; i++) t[i] ^= p[i];
        t[n] ^= 0x80;
        tlen = 16;
    }
    if (cmac_in_place(self, tlen, tag) < 0) return -1;
    unsigned char q[16];
    memcpy(q, tag, 16);
    q[8] &= 0x7f; /* the counter: V with bits 63 and 31 cleared */
    q[12] &= 0x7f;
    int outl = 0;
    if (EVP_EncryptInit_ex(self->ctr, NULL, NULL, NULL, q) != 1
        || EVP_EncryptUpdate(self->ctr, ct, &outl, p, (int)n) != 1 || (size_t)outl != n)
        return set_error_openssl("AES-CTR");
    return 0;
}

/* OpenSSL's own AES-SIV: the fallback, and the reference the built seal is checked against. */
static int openssl_seal(Minter *self, const unsigned char *header, size_t hlen,
                        const unsigned char *p, size_t n, unsigned char *tag, unsigned char *ct) {
    int outl = 0;
    if (n > INT_MAX - 32 || EVP_CIPHER_CTX_copy(self->work, self->keyed) != 1
        || EVP_EncryptUpdate(self->work, NULL, &outl, header, (int)hlen) != 1
        || EVP_EncryptUpdate(self->work, ct, &outl, p, (int)n) != 1
        || EVP_EncryptFinal_ex(self->work, ct + outl, &outl) != 1
        || EVP_CIPHER_CTX_ctrl(self->work, EVP_CTRL_AEAD_GET_TAG, TAG_SIZE, tag) != 1)
        return set_error_openssl("AES-SIV seal");
    return 0;
}

/* Key the CBC and CTR contexts, derive the subkeys and the headers' S2V, and compare the
 * seal built from them with OpenSSL's on probes (lengths around the block size). */
static int siv_setup(Minter *self, const unsigned char *key, size_t keylen) {
    size_t half = keylen / 2;
    const char *cbc = half == 16 ? "AES-128-CBC" : half == 24 ? "AES-192-CBC" : "AES-256-CBC";
    const char *ctr = half == 16 ? "AES-128-CTR" : half == 24 ? "AES-192-CTR" : "AES-256-CTR";
    self->cbc_cipher = EVP_CIPHER_fetch(NULL, cbc, NULL);
    self->ctr_cipher = EVP_CIPHER_fetch(NULL, ctr, NULL);
    self->cbc = EVP_CIPHER_CTX_new();
    self->ctr = EVP_CIPHER_CTX_new();
    if (!self->cbc_cipher || !self->ctr_cipher || !self->cbc || !self->ctr
        || EVP_EncryptInit_ex(self->cbc, self->cbc_cipher, NULL, key, ZERO16) != 1
        || EVP_CIPHER_CTX_set_padding(self->cbc, 0) != 1
        || EVP_EncryptInit_ex(self->ctr, self->ctr_cipher, NULL, key + half, ZERO16) != 1)
        return set_error_openssl("AES setup");
    unsigned char l[16];
    int outl = 0;
    if (EVP_EncryptUpdate(self->cbc, l, &outl, ZERO16, 16) != 1)
        return set_error_openssl("AES setup");
    memcpy(self->sub1, l, 16);
    dbl16(self->sub1);
    memcpy(self->sub2, self->sub1, 16);
    dbl16(self->sub2);
    unsigned char d0[16], h[16];
    if (cmac(self, ZERO16, 16, d0) < 0) return -1;
    dbl16(d0);
    memcpy(self->d_raw, d0, 16);
    memcpy(self->d_deflate, d0, 16);
    if (cmac(self, self->raw_header, self->header_len, h) < 0) return -1;
    xor16(self->d_raw, h);
    if (cmac(self, self->deflate_header, self->header_len, h) < 0) return -1;
    xor16(self->d_deflate, h);
    self->fast = 1;
    unsigned char probe[64], tag1[16], tag2[16], ct1[64], ct2[64];
    for (size_t i = 0; i < sizeof probe; i++) probe[i] = (unsigned char)(i * 37 + 11);
    static const size_t sizes[] = {1, 15, 16, 17, 32, 63};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        for (int which = 0; which < 2; which++) {
            const unsigned char *hd = which ? self->deflate_header : self->raw_header;
            const unsigned char *d = which ? self->d_deflate : self->d_raw;
            if (siv_seal(self, d, probe, sizes[k], tag1, ct1) < 0
                || openssl_seal(self, hd, self->header_len, probe, sizes[k], tag2, ct2) < 0)
                return -1;
            if (memcmp(tag1, tag2, 16) != 0 || memcmp(ct1, ct2, sizes[k]) != 0) self->fast = 0;
        }
    }
    return 0;
}

static int minter_init(Minter *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"key", "key_id", "zdict", NULL};
    Py_buffer key, kid, zdict;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*y*", kwlist, &key, &kid, &zdict))
        return -1;
    int rc = -1;
    if (self->keyed) {
        PyErr_SetString(PyExc_TypeError, "Minter is initialised once");
        goto done;
    }
    const char *name = key.len == 32 ? "AES-128-SIV" : key.len == 48 ? "AES-192-SIV"
                     : key.len == 64 ? "AES-256-SIV" : NULL;
    if (!name) {
        PyErr_SetString(PyExc_ValueError, "key must be 32, 48 or 64 bytes");
        goto done;
    }
    if (kid.len < 1 || kid.len > 255) {
        PyErr_SetString(PyExc_ValueError, "key id must be 1-255 bytes");
        goto done;
    }
    self->header_len = 2 + (size_t)kid.len;
    self->raw_header[0] = 0x01;
    self->deflate_header[0] = 0x02;
    self->raw_header[1] = self->deflate_header[1] = (unsigned char)kid.len;
    memcpy(self->raw_header + 2, kid.buf, (size_t)kid.len);
    memcpy(self->deflate_header + 2, kid.buf, (size_t)kid.len);

    self->cipher = EVP_CIPHER_fetch(NULL, name, NULL);
    self->keyed = EVP_CIPHER_CTX_new();
    self->work = EVP_CIPHER_CTX_new();
    if (!self->cipher || !self->keyed || !self->work) {
        set_error_openssl("AES-SIV setup");
        goto done;
    }
    if (EVP_EncryptInit_ex2(self->keyed, self->cipher, key.buf, NULL, NULL) != 1) {
        set_error_openssl("AES-SIV key");
        goto done;
    }
    if (siv_setup(self, key.buf, (size_t)key.len) < 0) goto done;

    /* The hash only decides which chain a position is in, never the output: random, so
     * that nobody can pick text whose positions all collide. */
    uint32_t multiplier = 2654435761u;
    if (RAND_bytes((unsigned char *)&multiplier, sizeof multiplier) != 1) multiplier = 2654435761u;
    self->fresh_ok = 1;
    if (window_init(&self->fresh, zdict.buf, (size_t)zdict.len, multiplier) < 0) goto done;
    rc = 0;
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&kid);
    PyBuffer_Release(&zdict);
    return rc;
}

/* The token sealing ``body`` (the plaintext, or its deflate when ``use_packed``), as a
 * base64url str. */
static PyObject *seal(Minter *self, const unsigned char *body, size_t body_len, int use_packed) {
    const unsigned char *header = use_packed ? self->deflate_header : self->raw_header;
    if (body_len > INT_MAX - 64) {
        PyErr_SetString(PyExc_ValueError, "payload too large");
        return NULL;
    }
    size_t hlen = self->header_len;
    size_t raw_len = hlen + TAG_SIZE + body_len;
    /* header | tag | ciphertext, then its base64 after it in the same buffer */
    size_t b64_len = (raw_len + 2) / 3 * 4;
    self->token.len = 0;
    if (buf_reserve(&self->token, raw_len + b64_len + 16) < 0) return NULL;
    unsigned char *raw = self->token.data;
    memcpy(raw, header, hlen);
    int sealed = self->fast
        ? siv_seal(self, use_packed ? self->d_deflate : self->d_raw, body, body_len, raw + hlen,
                   raw + hlen + TAG_SIZE)
        : openssl_seal(self, header, hlen, body, body_len, raw + hlen, raw + hlen + TAG_SIZE);
    if (sealed < 0) return NULL;
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char *b64 = raw + raw_len;
    unsigned char *q = b64;
    size_t i = 0;
    for (; i + 3 <= raw_len; i += 3) {
        unsigned v = (unsigned)raw[i] << 16 | (unsigned)raw[i + 1] << 8 | raw[i + 2];
        *q++ = alphabet[v >> 18];
        *q++ = alphabet[(v >> 12) & 63];
        *q++ = alphabet[(v >> 6) & 63];
        *q++ = alphabet[v & 63];
    }
    if (raw_len - i == 1) {
        unsigned v = (unsigned)raw[i] << 16;
        *q++ = alphabet[v >> 18];
        *q++ = alphabet[(v >> 12) & 63];
    } else if (raw_len - i == 2) {
        unsigned v = (unsigned)raw[i] << 16 | (unsigned)raw[i + 1] << 8;
        *q++ = alphabet[v >> 18];
        *q++ = alphabet[(v >> 12) & 63];
        *q++ = alphabet[(v >> 6) & 63];
    }
    /* ASCII: a compact str is one memcpy */
    return PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, b64, (Py_ssize_t)(q - b64));
}

/* The token for the payload in window ``s`` after the dictionary: its head and the tail
 * just appended, which is cut off again (and its positions unindexed) whatever happens. */
static PyObject *window_token(Minter *m, Window *s) {
    PyObject *result = NULL;
    size_t end = s->win.len, mark = s->indexed;
    const unsigned char *plain = s->win.data + s->dict_len;
    size_t plain_len = end - s->dict_len;
    if (end > MAX_WINDOW) {
        PyErr_SetString(PyExc_ValueError, "payload too large");
        goto done;
    }
    m->packed.len = 0;
    if (window_reserve_prev(s, end) < 0 || buf_put(&m->packed, s->bits.data, s->bits.len) < 0
        || reserve_symbols(&m->packed, s->resume, end) < 0)
        goto done;
    Bits b = s->rest;
    size_t p = s->resume;
    /* stopped: the deflate reached the plaintext's length, so the plaintext goes anyway */
    int stopped = parse(s, &m->packed, &b, &p, end, 0, plain_len * 8);
    unindex_to(s, mark);
    if (!stopped) put_end(&m->packed, &b);
    int use_packed = !stopped && m->packed.len < plain_len;
    result = use_packed ? seal(m, m->packed.data, m->packed.len, 1) : seal(m, plain, plain_len, 0);
done:
    s->win.len = s->head_end;
    window_trim(s);
    return result;
}

static PyObject *minter_mint(Minter *self, PyObject *arg) {
    Py_buffer plain;
    if (!self->keyed) {
        PyErr_SetString(PyExc_TypeError, "Minter not initialised");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &plain, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *result = NULL;
    if (buf_put(&self->fresh.win, plain.buf, (size_t)plain.len) == 0)
        result = window_token(self, &self->fresh);
    self->fresh.win.len = self->fresh.head_end;
    PyBuffer_Release(&plain);
    return result;
}

/* ---- Head: one copy's shared click fields, indexed and parsed once ---- */

typedef struct {
    PyObject_HEAD
    Minter *minter;
    int window_ok;
    Window window; /* the dictionary and the head's JSON bytes */
} Head;

static void head_dealloc(Head *self) {
    if (self->window_ok) window_free(&self->window);
    Py_XDECREF(self->minter);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *minter_head(Minter *self, PyObject *arg) {
    Py_buffer head;
    if (!self->keyed) {
        PyErr_SetString(PyExc_TypeError, "Minter not initialised");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &head, PyBUF_SIMPLE) < 0) return NULL;
    Head *h = PyObject_New(Head, &HeadType);
    if (!h) {
        PyBuffer_Release(&head);
        return NULL;
    }
    h->minter = self;
    Py_INCREF(self);
    h->window_ok = 1;
    int r = window_copy(&h->window, &self->fresh);
    if (r == 0) r = window_add_head(&h->window, head.buf, (size_t)head.len);
    PyBuffer_Release(&head);
    if (r < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return (PyObject *)h;
}

/* click(target_url, link_name, unsubscribe) -> token str, or None for an empty target
 * (tokens.py takes the long way there: the trailing defaults leave shared fields out). */
static PyObject *head_click(Head *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "click() takes target_url, link_name, unsubscribe");
        return NULL;
    }
    PyObject *url = args[0], *name = args[1], *unsub = args[2];
    if (!PyUnicode_CheckExact(url) || !PyUnicode_CheckExact(name) || !PyBool_Check(unsub)) {
        PyErr_SetString(PyExc_ValueError,
                        "target_url and link_name must be str, unsubscribe a bool");
        return NULL;
    }
    if (PyUnicode_GET_LENGTH(url) == 0) Py_RETURN_NONE;
    /* the link's fields go into the window after the head; window_token cuts them off */
    Window *s = &self->window;
    Buf *tail = &s->win;
    int with_name = unsub == Py_True || PyUnicode_GET_LENGTH(name) > 0;
    if (put_json_string(tail, url) < 0
        || (with_name && (buf_put(tail, ",", 1) < 0 || put_json_string(tail, name) < 0))
        || (unsub == Py_True && buf_put(tail, ",1", 2) < 0) || buf_put(tail, "]", 1) < 0) {
        tail->len = s->head_end;
        return NULL;
    }
    return window_token(self->minter, s);
}

static PyMethodDef head_methods[] = {
    {"click", (PyCFunction)(void (*)(void))head_click, METH_FASTCALL,
     "click(target_url, link_name, unsubscribe): the click token, None for an empty target"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HeadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "smtpapi_milter._native.tokenmint.Head",
    .tp_basicsize = sizeof(Head),
    .tp_dealloc = (destructor)head_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One copy's shared click fields, indexed and parsed once (Minter.head).",
    .tp_methods = head_methods,
};

static PyMemberDef minter_members[] = {
    {"fast_siv", T_INT, offsetof(Minter, fast), READONLY,
     "1 when seals are built here (they agreed with OpenSSL's AES-SIV at start), 0: OpenSSL's"},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef minter_methods[] = {
    {"mint", (PyCFunction)minter_mint, METH_O,
     "mint(plain): the token for JSON payload bytes ``plain``"},
    {"head", (PyCFunction)minter_head, METH_O,
     "head(head): a Head for click tokens whose payload starts with ``head``"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject MinterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "smtpapi_milter._native.tokenmint.Minter",
    .tp_basicsize = sizeof(Minter),
    .tp_dealloc = (destructor)minter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Minter(key, key_id, zdict): seals link tokens with one key (not thread-safe: "
              "one per codec, used under the GIL).",
    .tp_methods = minter_methods,
    .tp_members = minter_members,
    .tp_init = (initproc)minter_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tokenmint", "Link tokens minted in C (tokens.py is the reference).",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_tokenmint(void) {
    init_codes();
    if (PyType_Ready(&MinterType) < 0 || PyType_Ready(&HeadType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Minter", (PyObject *)&MinterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
