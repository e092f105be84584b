/* Scans of a mail-merged copy's text and bytes that Python can only do slowly; each has a
 * Python reference it is tested against.
 *
 * common_run: the length of the common prefix of two texts from given offsets
 * (merge_reuse._common_run_reference).
 *
 * A mail-merged copy is matched against the previous one by finding how far the two agree
 * from a point: in Python that takes slices (copies) of the new text, galloping then halving,
 * about 100 us of a merge copy's CPU (bench/milter_cpu.py). Here it is a compare in place:
 * memcmp over blocks while they agree, then byte by byte inside the block that differs.
 *
 * first_bare_cr, utf8_spans, find and long_lines: whole-body scans of each new body (mime,
 * edits, search, qp); each says below what it replaced.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define BLOCK 256

/* Common prefix of ``n`` units of ``size`` bytes at ``a`` and ``b``, in units. */
static Py_ssize_t common_units(const char *a, const char *b, Py_ssize_t n, int size) {
    Py_ssize_t done = 0;
    while (n - done >= BLOCK && memcmp(a + done * size, b + done * size, (size_t)BLOCK * size) == 0)
        done += BLOCK;
    const char *pa = a + done * size, *pb = b + done * size;
    Py_ssize_t left = n - done;
    Py_ssize_t k = 0;
    switch (size) {
    case 1:
        while (k < left && pa[k] == pb[k]) k++;
        break;
    case 2:
        while (k < left && ((const Py_UCS2 *)pa)[k] == ((const Py_UCS2 *)pb)[k]) k++;
        break;
    default:
        while (k < left && ((const Py_UCS4 *)pa)[k] == ((const Py_UCS4 *)pb)[k]) k++;
        break;
    }
    return done + k;
}

/* common_run(a, i, b, j): the length of the longest common prefix of a[i:] and b[j:] (two
 * str or two bytes; offsets past the end give 0, negative ones are an error). */
static PyObject *common_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "common_run(a, i, b, j)");
        return NULL;
    }
    PyObject *a = args[0], *b = args[2];
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    if (i == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t j = PyLong_AsSsize_t(args[3]);
    if (j == -1 && PyErr_Occurred()) return NULL;
    if (i < 0 || j < 0) {
        PyErr_SetString(PyExc_ValueError, "offsets must not be negative");
        return NULL;
    }
    if (PyBytes_Check(a) && PyBytes_Check(b)) {
        Py_ssize_t la = PyBytes_GET_SIZE(a), lb = PyBytes_GET_SIZE(b);
        if (i >= la || j >= lb) return PyLong_FromLong(0);
        Py_ssize_t n = la - i < lb - j ? la - i : lb - j;
        return PyLong_FromSsize_t(
            common_units(PyBytes_AS_STRING(a) + i, PyBytes_AS_STRING(b) + j, n, 1));
    }
    if (!PyUnicode_Check(a) || !PyUnicode_Check(b)) {
        PyErr_SetString(PyExc_TypeError, "two str or two bytes");
        return NULL;
    }
    Py_ssize_t la = PyUnicode_GET_LENGTH(a), lb = PyUnicode_GET_LENGTH(b);
    if (i >= la || j >= lb) return PyLong_FromLong(0);
    Py_ssize_t n = la - i < lb - j ? la - i : lb - j;
    int ka = PyUnicode_KIND(a), kb = PyUnicode_KIND(b);
    const void *da = PyUnicode_DATA(a), *db = PyUnicode_DATA(b);
    if (ka == kb)
        return PyLong_FromSsize_t(common_units((const char *)da + i * ka,
                                               (const char *)db + j * kb, n, ka));
    /* Different widths (one copy holds a wider character somewhere): by code point. */
    Py_ssize_t k = 0;
    while (k < n && PyUnicode_READ(ka, da, i + k) == PyUnicode_READ(kb, db, j + k)) k++;
    return PyLong_FromSsize_t(k);
}

#define BARE_CR_BLOCK 64

/* Whether p[0..BARE_CR_BLOCK) holds a CR that p[0..BARE_CR_BLOCK] has no LF after. */
__attribute__((optimize("tree-vectorize"))) static int block_has_bare_cr(const unsigned char *p) {
    unsigned char bad = 0;
    for (int i = 0; i < BARE_CR_BLOCK; i++) bad |= (p[i] == '\r') & (p[i + 1] != '\n');
    return bad;
}

/* first_bare_cr(data): the offset of the first CR in ``data`` (bytes) that no LF follows,
 * -1 if none (mime._BARE_CR.search is the reference). Every new body is checked for one, and
 * the regex's look-ahead at each CR of a CRLF body cost ~50 us per 100 KB (merge copies). */
static PyObject *first_bare_cr(PyObject *module, PyObject *data) {
    (void)module;
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "first_bare_cr needs bytes");
        return NULL;
    }
    const char *start = PyBytes_AS_STRING(data);
    const char *end = start + PyBytes_GET_SIZE(data);
    const char *p = start;
    /* Whole blocks first, without a branch per byte (the compiler makes it vector code): a
     * CRLF body has a CR on every line, and a memchr from each took 13 us per 99 KB body. */
    while (end - p > BARE_CR_BLOCK && !block_has_bare_cr((const unsigned char *)p))
        p += BARE_CR_BLOCK;
    while (p < end && (p = memchr(p, '\r', (size_t)(end - p))) != NULL) {
        if (p + 1 == end || p[1] != '\n') return PyLong_FromSsize_t(p - start);
        p += 2;
    }
    return PyLong_FromLong(-1);
}

/* UTF-8 length (surrogateescape: U+DC80..U+DCFF are one byte each) of text[from:to]; -1 for
 * a surrogate that encoding would refuse. Runs of ASCII are skipped a word at a time. */
static Py_ssize_t utf8_len(int kind, const void *data, Py_ssize_t from, Py_ssize_t to) {
    Py_ssize_t n = 0, i = from;
    if (kind == PyUnicode_1BYTE_KIND) {
        const unsigned char *s = data;
        for (; i + 8 <= to; i += 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            w &= 0x8080808080808080ULL;
            n += 8 + __builtin_popcountll(w);
        }
        for (; i < to; i++) n += 1 + (s[i] >> 7);
        return n;
    }
    if (kind == PyUnicode_2BYTE_KIND) {
        const Py_UCS2 *s = data;
        while (i < to) {
            if (i + 4 <= to) {
                uint64_t w;
                memcpy(&w, s + i, 8);
                if ((w & 0xFF80FF80FF80FF80ULL) == 0) {
                    n += 4;
                    i += 4;
                    continue;
                }
            }
            Py_UCS2 c = s[i++];
            if (c < 0x80) n += 1;
            else if (c < 0x800) n += 2;
            else if (c >= 0xD800 && c <= 0xDFFF) {
                if (c < 0xDC80 || c > 0xDCFF) return -1;
                n += 1;
            } else n += 3;
        }
        return n;
    }
    const Py_UCS4 *s = data;
    for (; i < to; i++) {
        Py_UCS4 c = s[i];
        if (c < 0x80) n += 1;
        else if (c < 0x800) n += 2;
        else if (c >= 0xD800 && c <= 0xDFFF) {
            if (c < 0xDC80 || c > 0xDCFF) return -1;
            n += 1;
        } else if (c < 0x10000) n += 3;
        else n += 4;
    }
    return n;
}

/* utf8_spans(text, spans) -> [(start, end)] in bytes, or None: where the (start, end, ...)
 * spans of ``text`` (sorted, apart) lie in text.encode("utf-8", "surrogateescape")
 * (edits.byte_spans is the reference). None when the spans are out of order or bounds, or
 * the text holds a surrogate that encoding refuses: the caller takes the reference. */
static PyObject *utf8_spans(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "utf8_spans(text: str, spans: list)");
        return NULL;
    }
    PyObject *text = args[0], *spans = args[1];
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    Py_ssize_t n = PyList_GET_SIZE(spans);
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    Py_ssize_t pos = 0, bytes = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *span = PyList_GET_ITEM(spans, k);
        Py_ssize_t se[2];
        for (int q = 0; q < 2; q++) {
            PyObject *v = PySequence_GetItem(span, q);
            if (!v) goto fail;
            se[q] = PyLong_AsSsize_t(v);
            Py_DECREF(v);
            if (se[q] == -1 && PyErr_Occurred()) goto fail;
        }
        if (!(pos <= se[0] && se[0] <= se[1] && se[1] <= length)) goto unusual;
        Py_ssize_t gap = utf8_len(kind, data, pos, se[0]);
        Py_ssize_t inside = gap < 0 ? -1 : utf8_len(kind, data, se[0], se[1]);
        if (inside < 0) goto unusual;
        PyObject *pair = Py_BuildValue("(nn)", bytes + gap, bytes + gap + inside);
        if (!pair) goto fail;
        PyList_SET_ITEM(out, k, pair);
        bytes += gap + inside;
        pos = se[1];
    }
    if (utf8_len(kind, data, pos, length) < 0) goto unusual;
    return out;
unusual:
    Py_DECREF(out);
    Py_RETURN_NONE;
fail:
    Py_DECREF(out);
    return NULL;
}

/* CPython's slice-index rules for find (ADJUST_INDICES in Objects/stringlib). */
static void adjust_indices(Py_ssize_t *start, Py_ssize_t *end, Py_ssize_t len) {
    if (*end > len) *end = len;
    else if (*end < 0) {
        *end += len;
        if (*end < 0) *end = 0;
    }
    if (*start < 0) {
        *start += len;
        if (*start < 0) *start = 0;
    }
}

/* find(haystack, needle, start, end): haystack.find(needle, start, end), for two bytes or two
 * str. A new body is searched whole a few times (the inline-PGP marker, the MIME boundary,
 * the curly-brace template marker), and CPython 3.11's find ran at 2-5 GB/s on them: the
 * PGP marker over a 94 KB part 19.7 us, where glibc's memmem takes 5.7. Bytes go to memmem
 * as they are; str too, as the code units of its width (1, 2 or 4 bytes: CPython keeps each
 * str in the narrowest that holds its widest character), the needle widened to the same,
 * and a match that does not start on a unit boundary is passed over. */
static PyObject *find(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "find(haystack, needle, start, end)");
        return NULL;
    }
    PyObject *hay = args[0], *needle = args[1];
    Py_ssize_t start = PyLong_AsSsize_t(args[2]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t end = PyLong_AsSsize_t(args[3]);
    if (end == -1 && PyErr_Occurred()) return NULL;
    const char *h, *n; /* haystack and needle as units of ``kind`` bytes */
    Py_ssize_t hlen, nlen;
    int kind = 1;
    char units[64 * 4];
    if (PyBytes_Check(hay) && PyBytes_Check(needle)) {
        h = PyBytes_AS_STRING(hay), hlen = PyBytes_GET_SIZE(hay);
        n = PyBytes_AS_STRING(needle), nlen = PyBytes_GET_SIZE(needle);
    } else if (PyUnicode_Check(hay) && PyUnicode_Check(needle)) {
        h = PyUnicode_DATA(hay), hlen = PyUnicode_GET_LENGTH(hay);
        nlen = PyUnicode_GET_LENGTH(needle);
        kind = PyUnicode_KIND(hay);
        int nkind = PyUnicode_KIND(needle);
        if (nkind > kind || nlen > 64) { /* a wider character, or a needle not worth widening */
            Py_ssize_t at = PyUnicode_Find(hay, needle, start, end, 1);
            return at == -2 ? NULL : PyLong_FromSsize_t(at);
        }
        const void *ndata = PyUnicode_DATA(needle);
        for (Py_ssize_t k = 0; k < nlen; k++) {
            Py_UCS4 c = PyUnicode_READ(nkind, ndata, k);
            if (kind == PyUnicode_1BYTE_KIND) ((Py_UCS1 *)units)[k] = (Py_UCS1)c;
            else if (kind == PyUnicode_2BYTE_KIND) ((Py_UCS2 *)units)[k] = (Py_UCS2)c;
            else ((Py_UCS4 *)units)[k] = c;
        }
        n = units;
    } else {
        PyErr_SetString(PyExc_TypeError, "find needs two bytes or two str");
        return NULL;
    }
    adjust_indices(&start, &end, hlen);
    if (end - start < nlen) return PyLong_FromLong(-1);
    if (nlen == 0) return PyLong_FromSsize_t(start);
    const char *from = h + start * kind, *stop = h + end * kind;
    size_t size = (size_t)nlen * kind;
    while ((size_t)(stop - from) >= size) {
        const char *at = memmem(from, (size_t)(stop - from), n, size);
        if (at == NULL) break;
        if ((at - h) % kind == 0) return PyLong_FromSsize_t((at - h) / kind);
        from = at + 1; /* inside a unit: not a match of characters */
    }
    return PyLong_FromLong(-1);
}

/* long_lines(raw, limit) -> [(start, end)]: each line of ``raw`` (its end past its LF, or
 * the end of raw) whose octets, CR LF or LF not counted, are more than ``limit``
 * (qp._long_lines_reference, whose steps this takes). Every new quoted-printable part is
 * checked, and Python's window-by-window rfind cost 13 us per 94 KB part. A window of
 * limit + 2 bytes from a line start holds a whole short line unless its one LF is its last
 * byte with no CR before it, so one memrchr per window (not one memchr per line: 76-octet QP
 * lines made that as slow as the Python) passes over the lines inside it. */
static int add_line(PyObject *found, Py_ssize_t start, Py_ssize_t end) {
    PyObject *pair = Py_BuildValue("(nn)", start, end);
    if (!pair) return -1;
    int failed = PyList_Append(found, pair);
    Py_DECREF(pair);
    return failed;
}

static PyObject *long_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "long_lines(raw: bytes, limit: int)");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred()) return NULL;
    if (limit < 0) {
        PyErr_SetString(PyExc_ValueError, "limit must not be negative");
        return NULL;
    }
    const char *raw = PyBytes_AS_STRING(args[0]);
    Py_ssize_t len = PyBytes_GET_SIZE(args[0]);
    PyObject *found = PyList_New(0);
    if (!found) return NULL;
    Py_ssize_t pos = 0;
    while (len - pos > limit) {
        Py_ssize_t window = pos + limit + 2;
        Py_ssize_t reach = window < len ? window : len;
        const char *last = memrchr(raw + pos, '\n', (size_t)(reach - pos));
        Py_ssize_t nl = last == NULL ? -1 : last - raw;
        if (nl < 0 || (nl == window - 1 && raw[nl - 1] != '\r' &&
                       memchr(raw + pos, '\n', (size_t)(nl - pos)) == NULL)) {
            const char *next = memchr(raw + pos, '\n', (size_t)(len - pos));
            Py_ssize_t end = next == NULL ? len : next - raw + 1;
            if (add_line(found, pos, end) < 0) {
                Py_DECREF(found);
                return NULL;
            }
            nl = end - 1;
        }
        pos = nl + 1;
    }
    return found;
}

static PyMethodDef methods[] = {
    {"find", (PyCFunction)(void (*)(void))find, METH_FASTCALL,
     "find(haystack, needle, start, end): haystack.find(needle, start, end), by memmem"},
    {"long_lines", (PyCFunction)(void (*)(void))long_lines, METH_FASTCALL,
     "long_lines(raw, limit): (start, end) of each line over limit octets, its break not counted"},
    {"utf8_spans", (PyCFunction)(void (*)(void))utf8_spans, METH_FASTCALL,
     "utf8_spans(text, spans): the spans' places in text's UTF-8 (surrogateescape), or None"},
    {"first_bare_cr", (PyCFunction)first_bare_cr, METH_O,
     "first_bare_cr(data): offset of the first CR no LF follows, -1 if none"},
    {"common_run", (PyCFunction)(void (*)(void))common_run, METH_FASTCALL,
     "common_run(a, i, b, j): length of the longest common prefix of a[i:] and b[j:]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "textrun",
    "Scans of mail-merged copies in C (Python references in rewrite/).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_textrun(void) { return PyModule_Create(&module); }
