/* A quoted-printable part with each copy's replacements spliced in, in one pass (rewrite/qp.py's
 * Splice.fill is the reference: the same bytes, tested against each other).
 *
 * Splice.fill joins each region's decoded bytes, encodes them with binascii.b2a_qp, writes
 * the part's line ending into the soft breaks and joins everything: four passes and as many
 * objects per region, dozens of regions per copy (bench/milter_cpu.py: ~135 us of ~540 per
 * bulk copy), after Splice.__init__ cut the pieces out per plan (~75 us per mail-merged
 * body). Here prepare() keeps only the offsets, and fill() encodes the regions straight
 * into the result.
 *
 * Only the regions of the reference's two common cases are encoded here (a CRLF or LF part;
 * decoded bytes with no LF, or one line and its break). Their encoding is b2a_qp's binary
 * mode (istext=False, no quotetabs, no header), whose rules (CPython's Modules/binascii.c,
 * RFC 2045 6.7) are, with no LF in the data:
 *   - a byte is escaped as =XX (upper-case hex) when it is over 126, "=", a CR, a control
 *     other than TAB and space, a TAB or space that is the last byte, or a "." that starts a
 *     line and is the last byte or precedes a CR or NUL;
 *   - before an escape, a soft break when the line would reach 76 with it (len + 3 >= 76);
 *   - before a plain byte that is not the last, a soft break when len + 1 >= 76.
 * then, with no LF, the region's last line is soft-broken when its raw line had a break
 * (qp._soft_ended); one line and its break is the line encoded, then the break. Any region
 * outside those cases makes fill() return None and the caller takes the reference.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#define MAX_ENCODED 76

typedef struct {
    unsigned char *p;
    int line; /* characters on the current encoded line */
} Out;

static const char HEX[] = "0123456789ABCDEF";

static void soft_break(Out *o, const unsigned char *eol, Py_ssize_t eol_len) {
    *o->p++ = '=';
    memcpy(o->p, eol, (size_t)eol_len);
    o->p += eol_len;
    o->line = 0;
}

typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
} Seg;

/* The first byte of the segments after ``k``, -1 past the last. */
static int next_seg_byte(const Seg *segs, Py_ssize_t k, Py_ssize_t nsegs) {
    for (k++; k < nsegs; k++)
        if (segs[k].n > 0) return segs[k].p[0];
    return -1;
}

/* The byte at ``pos`` of the segments joined, -1 before or past them. */
static int byte_at(const Seg *segs, Py_ssize_t nsegs, Py_ssize_t pos) {
    if (pos < 0) return -1;
    for (Py_ssize_t k = 0; k < nsegs; k++) {
        if (pos < segs[k].n) return segs[k].p[pos];
        pos -= segs[k].n;
    }
    return -1;
}

/* The first ``limit`` bytes of the segments joined, as b2a_qp's binary mode writes them
 * (no LF among them: the caller checked), soft breaks in ``eol``. */
static void encode_segs(Out *o, const Seg *segs, Py_ssize_t nsegs, Py_ssize_t limit,
                        const unsigned char *eol, Py_ssize_t eol_len) {
    Py_ssize_t g = 0;
    for (Py_ssize_t k = 0; k < nsegs && g < limit; k++) {
        const unsigned char *s = segs[k].p;
        Py_ssize_t n = segs[k].n;
        for (Py_ssize_t i = 0; i < n && g < limit; i++, g++) {
            unsigned char c = s[i];
            int at_end = g + 1 == limit;
            int escape;
            if (c > 126 || c == '=' || c == '\r') {
                escape = 1;
            } else if (c == '.') {
                int after = at_end ? -1 : i + 1 < n ? s[i + 1] : next_seg_byte(segs, k, nsegs);
                escape = o->line == 0 && (at_end || after == '\r' || after == 0);
            } else if (c == ' ' || c == '\t') {
                escape = at_end;
            } else {
                escape = c < 33;
            }
            if (escape) {
                if (o->line + 3 >= MAX_ENCODED) soft_break(o, eol, eol_len);
                *o->p++ = '=';
                *o->p++ = (unsigned char)HEX[c >> 4];
                *o->p++ = (unsigned char)HEX[c & 15];
                o->line += 3;
            } else {
                if (!at_end && o->line + 1 >= MAX_ENCODED) soft_break(o, eol, eol_len);
                *o->p++ = c;
                o->line++;
            }
        }
    }
}

/* One region's decoded bytes (the segments joined) encoded as qp._encode_data does in its
 * two common cases: no LF at all, or one line and its break. -1 for any other. */
static int encode_region(Out *o, const Seg *segs, Py_ssize_t nsegs, int broken,
                         const unsigned char *eol, Py_ssize_t eol_len) {
    Py_ssize_t total = 0, lf = -1;
    for (Py_ssize_t k = 0; k < nsegs; k++) {
        const unsigned char *seg = segs[k].p;
        Py_ssize_t n = segs[k].n;
        const unsigned char *nl = n ? memchr(seg, '\n', (size_t)n) : NULL;
        if (nl) {
            if (lf >= 0) return -1; /* a second LF */
            lf = total + (nl - seg);
            if (memchr(nl + 1, '\n', (size_t)(n - (nl + 1 - seg)))) return -1;
        }
        total += n;
    }
    o->line = 0;
    if (lf < 0) {
        unsigned char *start = o->p;
        encode_segs(o, segs, nsegs, total, eol, eol_len);
        if (broken && o->p > start) {
            /* qp._soft_ended: a soft break, the last line kept within 76 characters */
            if (o->line < MAX_ENCODED) {
                soft_break(o, eol, eol_len);
            } else {
                Py_ssize_t cut = o->p - start >= 3 && o->p[-3] == '=' ? 3 : 1;
                unsigned char moved[3];
                memcpy(moved, o->p - cut, (size_t)cut);
                o->p -= cut;
                soft_break(o, eol, eol_len);
                memcpy(o->p, moved, (size_t)cut);
                o->p += cut;
                soft_break(o, eol, eol_len);
            }
        }
        return 0;
    }
    /* One line and its break: the LF is the last byte and ends an eol. A region that is
     * a lone LF with eol CRLF is no such line (it read the byte before its first segment,
     * the CR of a line before, and wrote the LF as a line break: test_qp_native). */
    if (lf != total - 1 || total < eol_len ||
        (eol_len == 2 && byte_at(segs, nsegs, total - 2) != '\r'))
        return -1;
    encode_segs(o, segs, nsegs, total - eol_len, eol, eol_len);
    memcpy(o->p, eol, (size_t)eol_len);
    o->p += eol_len;
    return 0;
}

/* ---- Prepared: one plan's splice, made once, filled per copy ---- */

/* Per region: the raw bytes before it (raw[before:start]), whether its last raw line had a
 * break, and its decoded pieces (pieces[first .. first + count]): decoded[a:b] around and
 * between its edits, one more than its edits. */
typedef struct {
    Py_ssize_t before, start, first, count;
    int broken;
} PRegion;

typedef struct {
    PyObject_HEAD
    PyObject *raw, *decoded, *eol;
    PRegion *regions;
    Py_ssize_t nregions;
    Py_ssize_t *pieces; /* pairs (a, b) */
    Py_ssize_t npieces, nedits;
    Py_ssize_t tail; /* raw[tail:] follows the last region */
    size_t fixed;    /* raw bytes copied as they are */
    Seg *segs;       /* scratch: one region's segments */
    Py_ssize_t max_segs;
} Prepared;

static void prepared_dealloc(Prepared *self) {
    Py_XDECREF(self->raw);
    Py_XDECREF(self->decoded);
    Py_XDECREF(self->eol);
    PyMem_Free(self->regions);
    PyMem_Free(self->pieces);
    PyMem_Free(self->segs);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject PreparedType;

static int get_offset(PyObject *obj, const char *name, Py_ssize_t *out) {
    PyObject *v = PyObject_GetAttrString(obj, name);
    if (!v) return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static int span_item(PyObject *span, Py_ssize_t k, Py_ssize_t *out) {
    PyObject *v = PySequence_GetItem(span, k);
    if (!v) return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* prepare(raw, decoded, regions, spans, eol) -> Prepared, or None when the offsets are not
 * what qp.regions makes (in order, within the part): the caller keeps the Python way. */
static PyObject *qp_prepare(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "prepare(raw, decoded, regions, spans, eol)");
        return NULL;
    }
    PyObject *raw = args[0], *decoded = args[1], *regions = args[2], *spans = args[3];
    PyObject *eol = args[4];
    if (!PyBytes_CheckExact(raw) || !PyBytes_CheckExact(decoded) || !PyBytes_CheckExact(eol)
        || !PyList_Check(regions) || !PyList_Check(spans)) {
        PyErr_SetString(PyExc_TypeError, "raw, decoded, eol bytes; regions, spans lists");
        return NULL;
    }
    const unsigned char *e = (const unsigned char *)PyBytes_AS_STRING(eol);
    Py_ssize_t elen = PyBytes_GET_SIZE(eol);
    if (!((elen == 1 && e[0] == '\n') || (elen == 2 && e[0] == '\r' && e[1] == '\n')))
        Py_RETURN_NONE;
    Py_ssize_t nregions = PyList_GET_SIZE(regions), nspans = PyList_GET_SIZE(spans);
    Py_ssize_t rlen = PyBytes_GET_SIZE(raw), dlen = PyBytes_GET_SIZE(decoded);
    const char *rdata = PyBytes_AS_STRING(raw);
    Prepared *p = PyObject_New(Prepared, &PreparedType);
    if (!p) return NULL;
    p->raw = Py_NewRef(raw);
    p->decoded = Py_NewRef(decoded);
    p->eol = Py_NewRef(eol);
    p->nregions = nregions;
    p->regions = PyMem_Calloc((size_t)nregions + 1, sizeof(PRegion));
    p->pieces = PyMem_Calloc(2 * ((size_t)nregions + (size_t)nspans) + 2, sizeof(Py_ssize_t));
    p->segs = NULL;
    p->npieces = p->nedits = 0;
    p->fixed = 0;
    p->max_segs = 1;
    if (!p->regions || !p->pieces) {
        Py_DECREF(p);
        return PyErr_NoMemory();
    }
    Py_ssize_t pos = 0, taken = 0;
    for (Py_ssize_t r = 0; r < nregions; r++) {
        PyObject *region = PyList_GET_ITEM(regions, r);
        Py_ssize_t start, end, dstart, dend, count;
        if (get_offset(region, "start", &start) < 0 || get_offset(region, "end", &end) < 0
            || get_offset(region, "dstart", &dstart) < 0 || get_offset(region, "dend", &dend) < 0
            || get_offset(region, "edit_count", &count) < 0)
            goto fail;
        if (!(pos <= start && start <= end && end <= rlen && 0 <= dstart && dstart <= dend
              && dend <= dlen && count >= 0 && count <= nspans - taken))
            goto unusual;
        PRegion *pr = &p->regions[r];
        pr->before = pos;
        pr->start = start;
        pr->first = p->npieces;
        pr->count = count + 1;
        pr->broken = end > start && rdata[end - 1] == '\n';
        Py_ssize_t at = dstart;
        for (Py_ssize_t k = 0; k < count; k++) {
            PyObject *span = PyList_GET_ITEM(spans, taken + k);
            Py_ssize_t s0, s1;
            if (span_item(span, 0, &s0) < 0 || span_item(span, 1, &s1) < 0) goto fail;
            if (!(at <= s0 && s0 <= s1 && s1 <= dend)) goto unusual;
            p->pieces[2 * p->npieces] = at;
            p->pieces[2 * p->npieces + 1] = s0;
            p->npieces++;
            at = s1;
        }
        p->pieces[2 * p->npieces] = at;
        p->pieces[2 * p->npieces + 1] = dend;
        p->npieces++;
        if (2 * count + 1 > p->max_segs) p->max_segs = 2 * count + 1;
        p->fixed += (size_t)(start - pos);
        taken += count;
        pos = end;
    }
    p->nedits = taken;
    p->tail = pos;
    p->fixed += (size_t)(rlen - pos);
    p->segs = PyMem_Calloc((size_t)p->max_segs, sizeof(Seg));
    if (!p->segs) {
        Py_DECREF(p);
        return PyErr_NoMemory();
    }
    return (PyObject *)p;
unusual:
    Py_DECREF(p);
    Py_RETURN_NONE;
fail:
    Py_DECREF(p);
    return NULL;
}

/* fill(replacements) -> the part with them spliced in, or None when a region's data is not
 * one of the two common cases (a LF inside): the caller takes the Python way. */
static PyObject *prepared_fill(Prepared *self, PyObject *repl) {
    PyObject *rseq = PySequence_Fast(repl, "replacements must be a sequence");
    if (!rseq) return NULL;
    if (PySequence_Fast_GET_SIZE(rseq) < self->nedits) {
        Py_DECREF(rseq);
        PyErr_SetString(PyExc_ValueError, "fewer replacements than edits");
        return NULL;
    }
    PyObject **ritems = PySequence_Fast_ITEMS(rseq);
    Py_buffer *views = PyMem_Calloc((size_t)self->nedits + 1, sizeof(Py_buffer));
    if (!views) {
        Py_DECREF(rseq);
        return PyErr_NoMemory();
    }
    Py_ssize_t got = 0;
    PyObject *result = NULL;
    const unsigned char *raw = (const unsigned char *)PyBytes_AS_STRING(self->raw);
    const unsigned char *dec = (const unsigned char *)PyBytes_AS_STRING(self->decoded);
    const unsigned char *eol = (const unsigned char *)PyBytes_AS_STRING(self->eol);
    Py_ssize_t eol_len = PyBytes_GET_SIZE(self->eol);
    /* Bound, as in qp_fill: raw as is, each region byte at most 3 plus soft breaks. */
    size_t bound = self->fixed;
    for (Py_ssize_t r = 0, k = 0; r < self->nregions; r++) {
        const PRegion *pr = &self->regions[r];
        size_t data = 0;
        for (Py_ssize_t q = 0; q < pr->count; q++) {
            const Py_ssize_t *ab = &self->pieces[2 * (pr->first + q)];
            data += (size_t)(ab[1] - ab[0]);
        }
        for (Py_ssize_t q = 1; q < pr->count; q++, k++) {
            if (PyObject_GetBuffer(ritems[k], &views[got], PyBUF_SIMPLE) < 0) goto done;
            data += (size_t)views[got++].len;
        }
        if (data > ((size_t)PY_SSIZE_T_MAX - bound) / 5) {
            PyErr_NoMemory();
            goto done;
        }
        bound += data * 3 + (data / 24 + 1) * 3 + 16;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)bound);
    if (!result) goto done;
    unsigned char *start = (unsigned char *)PyBytes_AS_STRING(result);
    Out o = {start, 0};
    for (Py_ssize_t r = 0, k = 0; r < self->nregions; r++) {
        const PRegion *pr = &self->regions[r];
        memcpy(o.p, raw + pr->before, (size_t)(pr->start - pr->before));
        o.p += pr->start - pr->before;
        Py_ssize_t nsegs = 2 * pr->count - 1;
        for (Py_ssize_t q = 0; q < nsegs; q++) {
            if (q % 2 == 0) {
                const Py_ssize_t *ab = &self->pieces[2 * (pr->first + q / 2)];
                self->segs[q].p = dec + ab[0];
                self->segs[q].n = ab[1] - ab[0];
            } else {
                self->segs[q].p = views[k + q / 2].buf;
                self->segs[q].n = views[k + q / 2].len;
            }
        }
        if (encode_region(&o, self->segs, nsegs, pr->broken, eol, eol_len) < 0) {
            Py_DECREF(result);
            result = Py_NewRef(Py_None);
            goto done;
        }
        k += pr->count - 1;
    }
    memcpy(o.p, raw + self->tail, (size_t)(PyBytes_GET_SIZE(self->raw) - self->tail));
    o.p += PyBytes_GET_SIZE(self->raw) - self->tail;
    if ((size_t)(o.p - start) > bound) Py_FatalError("qpsplice: output bound exceeded");
    if (_PyBytes_Resize(&result, o.p - start) < 0) result = NULL;
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    Py_DECREF(rseq);
    return result;
}

static PyMethodDef prepared_methods[] = {
    {"fill", (PyCFunction)prepared_fill, METH_O,
     "fill(replacements): qp.Splice.fill's bytes, or None when a region has a LF inside"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PreparedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "smtpapi_milter._native.qpsplice.Prepared",
    .tp_basicsize = sizeof(Prepared),
    .tp_dealloc = (destructor)prepared_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One plan's splice (qpsplice.prepare), filled per copy.",
    .tp_methods = prepared_methods,
};

static PyMethodDef methods[] = {
    {"prepare", (PyCFunction)(void (*)(void))qp_prepare, METH_FASTCALL,
     "prepare(raw, decoded, regions, spans, eol): a Prepared splice, or None (the offsets or "
     "the line ending are not the common case: the caller keeps the Python way)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "qpsplice",
    "Quoted-printable splice in C (rewrite/qp.py is the reference).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_qpsplice(void) {
    if (PyType_Ready(&PreparedType) < 0) return NULL;
    return PyModule_Create(&module);
}
