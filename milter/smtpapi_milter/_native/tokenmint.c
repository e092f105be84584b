/* Link tokens minted in C: the same bytes as tokens.py's pure-Python path (its reference).
 *
 * A newsletter copy has dozens of click links and each token costs a deflate-state copy, a
 * compression with a preset dictionary, an AES-SIV seal and a base64url encoding; in Python
 * the glue between those library calls cost as much as the calls (bench/milter_cpu.py).
 * Here one token is one call: the link's JSON fields are written straight into a buffer, the
 * copy's deflate state (its shared head already fed) is duplicated into a per-head arena
 * instead of malloc'd, and one cipher context per key is kept for every seal.
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
#include <string.h>

#include <openssl/evp.h>
#include <zlib.h>

#define TAG_SIZE 16
#define WINDOW_BITS (-12) /* tokens.py: a 4 KiB raw-deflate window, memLevel 4, level 9 */
#define MEM_LEVEL 4
#define LEVEL 9

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

/* ---- zlib allocation from an arena: a deflate copy per token without malloc/free ---- */

typedef struct {
    unsigned char *base;
    size_t size, used;
    int spilled; /* an allocation did not fit (never expected): it went to PyMem instead */
} Arena;

static voidpf arena_alloc(voidpf opaque, uInt items, uInt size) {
    Arena *a = opaque;
    size_t n = (size_t)items * size;
    if (size && n / size != items) return Z_NULL;
    n = (n + 15) & ~(size_t)15;
    if (a->base && n <= a->size - a->used) {
        voidpf p = a->base + a->used;
        a->used += n;
        return p;
    }
    a->spilled = 1;
    return PyMem_RawMalloc(n ? n : 1);
}

static void arena_free(voidpf opaque, voidpf p) {
    Arena *a = opaque;
    unsigned char *q = p;
    if (a->base && q >= a->base && q < a->base + a->size) return; /* reset per token */
    PyMem_RawFree(p);
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
    z_stream fresh; /* deflater with the preset dictionary set, nothing fed */
    int fresh_ok;
    Arena arena;
    z_stream scratch;
    Buf plain, packed, token;
} Minter;

static PyTypeObject MinterType;
static PyTypeObject HeadType;

static void minter_dealloc(Minter *self) {
    if (self->fresh_ok) deflateEnd(&self->fresh);
    EVP_CIPHER_CTX_free(self->keyed);
    EVP_CIPHER_CTX_free(self->work);
    EVP_CIPHER_free(self->cipher);
    EVP_CIPHER_CTX_free(self->cbc);
    EVP_CIPHER_CTX_free(self->ctr);
    EVP_CIPHER_free(self->cbc_cipher);
    EVP_CIPHER_free(self->ctr_cipher);
    PyMem_Free(self->mac.data);
    PyMem_RawFree(self->arena.base);
    PyMem_Free(self->plain.data);
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
    if (zdict.len > UINT_MAX) {
        PyErr_SetString(PyExc_ValueError, "dictionary too large");
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

    memset(&self->fresh, 0, sizeof self->fresh);
    if (deflateInit2(&self->fresh, LEVEL, Z_DEFLATED, WINDOW_BITS, MEM_LEVEL,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        PyErr_SetString(PyExc_MemoryError, "deflateInit2 failed");
        goto done;
    }
    self->fresh_ok = 1;
    if (deflateSetDictionary(&self->fresh, zdict.buf, (uInt)zdict.len) != Z_OK) {
        PyErr_SetString(PyExc_RuntimeError, "deflateSetDictionary failed");
        goto done;
    }
    /* What one deflate state of these parameters allocates, with slack: zlib's own sizes
     * (deflate.c: window 2*wsize, prev wsize*2, head hash_size*2, pending 4*lit_bufsize,
     * the state) differ across versions, so an allocation that does not fit spills. */
    self->arena.size = (size_t)6 << 14;
    self->arena.base = PyMem_RawMalloc(self->arena.size);
    if (!self->arena.base) {
        PyErr_NoMemory();
        goto done;
    }
    rc = 0;
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&kid);
    PyBuffer_Release(&zdict);
    return rc;
}

/* Run ``strm`` (a copy) over ``in`` and finish it, appending to ``out``; stops early (returns
 * 1) once the output reaches ``limit`` bytes, since the raw payload then wins anyway.
 * Returns 0 when complete, -1 on error (exception set). */
static int deflate_rest(z_stream *strm, const unsigned char *in, size_t in_len, Buf *out,
                        size_t limit) {
    if (in_len > UINT_MAX) {
        PyErr_SetString(PyExc_ValueError, "payload too large");
        return -1;
    }
    if (out->len >= limit) return 1;
    if (buf_reserve(out, limit - out->len) < 0) return -1;
    strm->next_in = (Bytef *)in;
    strm->avail_in = (uInt)in_len;
    size_t room = limit - out->len;
    if (room > UINT_MAX) room = UINT_MAX;
    strm->next_out = out->data + out->len;
    strm->avail_out = (uInt)room;
    /* Python's compressobj: compress(data) runs Z_NO_FLUSH over all of it, flush() Z_FINISH. */
    int z = deflate(strm, Z_NO_FLUSH);
    if (z != Z_OK && z != Z_BUF_ERROR) goto fail;
    if (strm->avail_out == 0) {
        out->len = limit;
        return 1;
    }
    z = deflate(strm, Z_FINISH);
    out->len = (size_t)(strm->next_out - out->data);
    if (z == Z_STREAM_END) return 0;
    if (z == Z_OK || z == Z_BUF_ERROR) return 1; /* out of room: output would exceed limit */
fail:
    PyErr_Format(PyExc_RuntimeError, "deflate failed (%d)", z);
    return -1;
}

/* ``self->plain`` sealed (or ``self->packed`` when shorter), as a base64url str. */
static PyObject *seal(Minter *self, int use_packed) {
    const unsigned char *header = use_packed ? self->deflate_header : self->raw_header;
    Buf *body = use_packed ? &self->packed : &self->plain;
    if (body->len > INT_MAX - 64) {
        PyErr_SetString(PyExc_ValueError, "payload too large");
        return NULL;
    }
    size_t hlen = self->header_len;
    size_t raw_len = hlen + TAG_SIZE + body->len;
    /* header | tag | ciphertext, then its base64 after it in the same buffer */
    size_t b64_len = (raw_len + 2) / 3 * 4;
    self->token.len = 0;
    if (buf_reserve(&self->token, raw_len + b64_len + 16) < 0) return NULL;
    unsigned char *raw = self->token.data;
    memcpy(raw, header, hlen);
    int sealed = self->fast
        ? siv_seal(self, use_packed ? self->d_deflate : self->d_raw, body->data, body->len,
                   raw + hlen, raw + hlen + TAG_SIZE)
        : openssl_seal(self, header, hlen, body->data, body->len, raw + hlen,
                       raw + hlen + TAG_SIZE);
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

/* Copy ``src`` into the scratch stream, its allocations from the arena. */
static int copy_deflater(Minter *self, z_stream *src) {
    self->arena.used = 0;
    self->arena.spilled = 0;
    /* deflateCopy allocates with the source's zalloc; the source's are the arena's too
     * (heads and the fresh one are set up with the default allocator: swap for the copy). */
    alloc_func za = src->zalloc;
    free_func zf = src->zfree;
    voidpf op = src->opaque;
    src->zalloc = arena_alloc;
    src->zfree = arena_free;
    src->opaque = &self->arena;
    int z = deflateCopy(&self->scratch, src);
    src->zalloc = za;
    src->zfree = zf;
    src->opaque = op;
    if (z != Z_OK) {
        PyErr_Format(PyExc_MemoryError, "deflateCopy failed (%d)", z);
        return -1;
    }
    return 0;
}

/* plain = prefix + tail is in self->plain; packed_prefix was the output for prefix so far. */
static PyObject *finish_token(Minter *self, z_stream *state, const unsigned char *packed_prefix,
                              size_t packed_prefix_len, size_t tail_off) {
    if (copy_deflater(self, state) < 0) return NULL;
    self->packed.len = 0;
    int r = packed_prefix_len ? buf_put(&self->packed, packed_prefix, packed_prefix_len) : 0;
    if (r == 0)
        r = deflate_rest(&self->scratch, self->plain.data + tail_off,
                         self->plain.len - tail_off, &self->packed, self->plain.len);
    deflateEnd(&self->scratch);
    if (r < 0) return NULL;
    /* r == 1: the deflate reached the plaintext's length, so the plaintext goes */
    return seal(self, r == 0 && self->packed.len < self->plain.len);
}

static PyObject *minter_mint(Minter *self, PyObject *arg) {
    Py_buffer plain;
    if (!self->keyed) {
        PyErr_SetString(PyExc_TypeError, "Minter not initialised");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &plain, PyBUF_SIMPLE) < 0) return NULL;
    self->plain.len = 0;
    PyObject *result = NULL;
    if (buf_put(&self->plain, plain.buf, (size_t)plain.len) == 0)
        result = finish_token(self, &self->fresh, NULL, 0, 0);
    PyBuffer_Release(&plain);
    return result;
}

/* ---- Head: one copy's shared click fields, fed to a deflater ---- */

typedef struct {
    PyObject_HEAD
    Minter *minter;
    z_stream strm;
    int strm_ok;
    Buf head;   /* the head's JSON bytes */
    Buf packed; /* the deflate output for the head so far */
} Head;

static void head_dealloc(Head *self) {
    if (self->strm_ok) deflateEnd(&self->strm);
    Py_XDECREF(self->minter);
    PyMem_Free(self->head.data);
    PyMem_Free(self->packed.data);
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
    h->strm_ok = 0;
    h->head = (Buf){0};
    h->packed = (Buf){0};
    if (head.len > UINT_MAX / 2) {
        PyErr_SetString(PyExc_ValueError, "head too large");
        goto fail;
    }
    memset(&h->strm, 0, sizeof h->strm);
    if (deflateCopy(&h->strm, &self->fresh) != Z_OK) {
        PyErr_NoMemory();
        goto fail;
    }
    h->strm_ok = 1;
    if (buf_put(&h->head, head.buf, (size_t)head.len) < 0) goto fail;
    /* compress(head) without a flush: whatever deflate emits, in any number of rounds */
    h->strm.next_in = h->head.data;
    h->strm.avail_in = (uInt)h->head.len;
    do {
        if (buf_reserve(&h->packed, 256) < 0) goto fail;
        h->strm.next_out = h->packed.data + h->packed.len;
        h->strm.avail_out = (uInt)(h->packed.cap - h->packed.len);
        int z = deflate(&h->strm, Z_NO_FLUSH);
        if (z != Z_OK && z != Z_BUF_ERROR) {
            PyErr_Format(PyExc_RuntimeError, "deflate failed (%d)", z);
            goto fail;
        }
        h->packed.len = (size_t)(h->strm.next_out - h->packed.data);
    } while (h->strm.avail_out == 0);
    PyBuffer_Release(&head);
    return (PyObject *)h;
fail:
    PyBuffer_Release(&head);
    Py_DECREF(h);
    return NULL;
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
    Minter *m = self->minter;
    Buf *plain = &m->plain;
    plain->len = 0;
    if (buf_put(plain, self->head.data, self->head.len) < 0) return NULL;
    size_t tail_off = plain->len;
    if (put_json_string(plain, url) < 0) return NULL;
    int with_name = unsub == Py_True || PyUnicode_GET_LENGTH(name) > 0;
    if (with_name) {
        if (buf_put(plain, ",", 1) < 0 || put_json_string(plain, name) < 0) return NULL;
    }
    if (unsub == Py_True && buf_put(plain, ",1", 2) < 0) return NULL;
    if (buf_put(plain, "]", 1) < 0) return NULL;
    return finish_token(m, &self->strm, self->packed.data, self->packed.len, tail_off);
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
    .tp_doc = "One copy's shared click fields, fed to a deflater (Minter.head).",
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
    if (PyType_Ready(&MinterType) < 0 || PyType_Ready(&HeadType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Minter", (PyObject *)&MinterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
