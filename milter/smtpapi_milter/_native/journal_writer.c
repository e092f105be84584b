/* The tracker's journal writer thread, without the GIL (tracker/native_journal.py uses it).
 *
 * A click's handler hands its journal record (bytes, framed and checksummed in Python by
 * events/journal.py's encode_record) to submit(), which copies it into the pending segment
 * and returns the record's number. One POSIX thread writes everything pending, fdatasync()s
 * it, advances the count of durable records and writes to an eventfd, which the event loop
 * watches: one loop wake-up per flush, and no Python thread taking the GIL per group (the
 * Python writer thread's hand-over cost ~10 us of the loop thread's CPU per click and ~11 us
 * of its own, measured with bench/tracker_cpu.py).
 *
 * switch(fd): records submitted afterwards go to another (new, empty, already created and
 * flushed into its directory by Python) file. A failed write or flush cuts the file back to
 * where the failed segment began, fails that segment and everything pending after it, and
 * refuses submit() (OSError) until reset(): the Python side answers those requests 503 and
 * re-reads the file's size before writing again, so its offsets never run ahead of the file.
 *
 * Nothing here reads the records: it only appends bytes in order.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

typedef struct Segment {
    struct Segment *next;
    int fd;
    char *data;
    size_t len, cap;
    unsigned long long last; /* number of the last record in it */
} Segment;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mutex;
    pthread_cond_t work; /* to the thread: something is pending, or stop */
    pthread_cond_t idle; /* from the thread: a batch is done (drain) */
    pthread_t thread;
    int thread_started;
    int wake_fd;               /* eventfd (or pipe) the loop watches; not owned */
    int fd;                    /* where the next submit goes; not owned */
    Segment *head, *tail;      /* pending, in order */
    unsigned long long submitted; /* records numbered so far */
    unsigned long long durable;   /* records 1..durable are flushed */
    unsigned long long failed;    /* records durable+1..failed were refused by the disk */
    int error;                 /* errno of the failure, 0 when not broken */
    int stopping;
    int busy;                  /* the thread is writing a batch */
    /* The thread's own: the file it last wrote and that file's size. */
    int written_fd;
    off_t written_size;
} Writer;

static void free_segments(Segment *segment) {
    while (segment != NULL) {
        Segment *next = segment->next;
        free(segment->data);
        free(segment);
        segment = next;
    }
}

static void notify_loop(Writer *self) {
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(self->wake_fd, &one, sizeof one);
    } while (n < 0 && errno == EINTR);
    /* EAGAIN: the counter is already non-zero, the loop will look anyway. */
}

/* Write and flush one segment; 0 or an errno. The file is cut back on failure. */
static int flush_segment(Writer *self, Segment *segment) {
    if (segment->fd != self->written_fd) {
        /* A file switch(): Python made it new and empty. */
        self->written_fd = segment->fd;
        self->written_size = 0;
    }
    off_t start = self->written_size;
    size_t done = 0;
    int error = 0;
    while (done < segment->len) {
        ssize_t n = write(segment->fd, segment->data + done, segment->len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            error = errno;
            break;
        }
        if (n == 0) {
            error = EIO;
            break;
        }
        done += (size_t)n;
    }
    if (error == 0 && done > 0) {
        while (fdatasync(segment->fd) < 0) {
            if (errno != EINTR) {
                error = errno;
                break;
            }
        }
    }
    if (error != 0) {
        /* Whatever part reached the file was never acknowledged: cut it, so the records
         * written next are not hidden behind a torn one. Best effort. */
        if (ftruncate(segment->fd, start) < 0) {
            /* nothing more to do: the reader stops at the torn record */
        }
        return error;
    }
    self->written_size = start + (off_t)done;
    return 0;
}

static void *run(void *arg) {
    Writer *self = (Writer *)arg;
    pthread_mutex_lock(&self->mutex);
    for (;;) {
        while (self->head == NULL && !self->stopping)
            pthread_cond_wait(&self->work, &self->mutex);
        if (self->head == NULL)
            break; /* stopping, and everything is written */
        Segment *batch = self->head;
        self->head = self->tail = NULL;
        self->busy = 1;
        pthread_mutex_unlock(&self->mutex);

        unsigned long long durable = 0, last = 0;
        int error = 0;
        for (Segment *segment = batch; segment != NULL; segment = segment->next) {
            last = segment->last;
            if (error == 0) {
                error = flush_segment(self, segment);
                if (error == 0)
                    durable = segment->last;
            }
        }
        free_segments(batch);

        pthread_mutex_lock(&self->mutex);
        self->busy = 0;
        if (durable > self->durable)
            self->durable = durable;
        if (error != 0) {
            /* This batch's rest fails, and so does whatever was submitted meanwhile: its
             * offsets were counted after the records that are now cut. */
            self->error = error;
            self->failed = self->tail != NULL ? self->tail->last : last;
            free_segments(self->head);
            self->head = self->tail = NULL;
        }
        pthread_cond_broadcast(&self->idle); /* drain() */
        notify_loop(self);
    }
    pthread_mutex_unlock(&self->mutex);
    return NULL;
}

static int Writer_init(Writer *self, PyObject *args, PyObject *kwds) {
    static char *keywords[] = {"fd", "wake_fd", NULL};
    int fd, wake_fd;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ii", keywords, &fd, &wake_fd))
        return -1;
    if (self->thread_started) {
        PyErr_SetString(PyExc_RuntimeError, "Writer already initialised");
        return -1;
    }
    if (fd < 0 || wake_fd < 0) {
        PyErr_SetString(PyExc_ValueError, "descriptors must not be negative");
        return -1;
    }
    self->fd = fd;
    self->wake_fd = wake_fd;
    self->written_fd = fd;
    self->written_size = lseek(fd, 0, SEEK_END);
    if (self->written_size < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    int rc = pthread_create(&self->thread, NULL, run, self);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->thread_started = 1;
    return 0;
}

static PyObject *Writer_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    Writer *self = (Writer *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    pthread_mutex_init(&self->mutex, NULL);
    pthread_cond_init(&self->work, NULL);
    pthread_cond_init(&self->idle, NULL);
    self->wake_fd = self->fd = self->written_fd = -1;
    return (PyObject *)self;
}

/* Stop the thread after it wrote what is pending; callers hold no lock. */
static void stop_thread(Writer *self) {
    if (!self->thread_started)
        return;
    pthread_mutex_lock(&self->mutex);
    self->stopping = 1;
    pthread_cond_broadcast(&self->work);
    pthread_mutex_unlock(&self->mutex);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(self->thread, NULL);
    Py_END_ALLOW_THREADS
    self->thread_started = 0;
}

static void Writer_dealloc(Writer *self) {
    stop_thread(self);
    free_segments(self->head);
    pthread_mutex_destroy(&self->mutex);
    pthread_cond_destroy(&self->work);
    pthread_cond_destroy(&self->idle);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Writer_submit(Writer *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len <= 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "an empty record");
        return NULL;
    }
    size_t len = (size_t)view.len;
    pthread_mutex_lock(&self->mutex);
    if (self->stopping || !self->thread_started) {
        pthread_mutex_unlock(&self->mutex);
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_RuntimeError, "journal writer stopped");
        return NULL;
    }
    if (self->error != 0) {
        int error = self->error;
        pthread_mutex_unlock(&self->mutex);
        PyBuffer_Release(&view);
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Segment *segment = self->tail;
    if (segment == NULL || segment->fd != self->fd) {
        segment = calloc(1, sizeof *segment);
        if (segment == NULL)
            goto no_memory;
        segment->fd = self->fd;
        if (self->tail != NULL)
            self->tail->next = segment;
        else
            self->head = segment;
        self->tail = segment;
    }
    if (len > SIZE_MAX - segment->len)
        goto no_memory;
    if (segment->len + len > segment->cap) {
        size_t cap = segment->cap ? segment->cap : 16384;
        while (cap < segment->len + len) {
            if (cap > SIZE_MAX / 2)
                goto no_memory;
            cap *= 2;
        }
        char *data = realloc(segment->data, cap);
        if (data == NULL)
            goto no_memory;
        segment->data = data;
        segment->cap = cap;
    }
    memcpy(segment->data + segment->len, view.buf, len);
    segment->len += len;
    unsigned long long number = ++self->submitted;
    segment->last = number;
    if (!self->busy)
        pthread_cond_signal(&self->work);
    pthread_mutex_unlock(&self->mutex);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(number);

no_memory:
    /* An empty segment just linked in stays harmless: its last record is the previous one. */
    if (segment != NULL && segment->len == 0)
        segment->last = self->submitted;
    pthread_mutex_unlock(&self->mutex);
    PyBuffer_Release(&view);
    return PyErr_NoMemory();
}

static PyObject *Writer_switch(Writer *self, PyObject *arg) {
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred())
        return NULL;
    int fd = (int)value;
    if (value < 0 || value > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "descriptor must not be negative");
        return NULL;
    }
    pthread_mutex_lock(&self->mutex);
    self->fd = fd;
    pthread_mutex_unlock(&self->mutex);
    Py_RETURN_NONE;
}

/* (durable, failed, errno): records up to durable are flushed; durable+1..failed failed. */
static PyObject *Writer_status(Writer *self, PyObject *Py_UNUSED(ignored)) {
    pthread_mutex_lock(&self->mutex);
    unsigned long long durable = self->durable, failed = self->failed;
    int error = self->error;
    pthread_mutex_unlock(&self->mutex);
    return Py_BuildValue("KKi", durable, failed, error);
}

/* After a failure was answered: take records again (the caller re-reads the file's size). */
static PyObject *Writer_reset(Writer *self, PyObject *Py_UNUSED(ignored)) {
    pthread_mutex_lock(&self->mutex);
    self->error = 0;
    if (self->failed > self->durable)
        self->durable = self->failed; /* answered (as failed): nothing waits for them */
    pthread_mutex_unlock(&self->mutex);
    Py_RETURN_NONE;
}

/* Until nothing is pending or being written (the GIL is released meanwhile). */
static PyObject *Writer_drain(Writer *self, PyObject *Py_UNUSED(ignored)) {
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->mutex);
    while (self->thread_started && (self->head != NULL || self->busy))
        pthread_cond_wait(&self->idle, &self->mutex);
    pthread_mutex_unlock(&self->mutex);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Writer_stop(Writer *self, PyObject *Py_UNUSED(ignored)) {
    stop_thread(self);
    Py_RETURN_NONE;
}

static PyMethodDef Writer_methods[] = {
    {"submit", (PyCFunction)Writer_submit, METH_O,
     "submit(record) -> its number; OSError while a failure is not reset()"},
    {"switch", (PyCFunction)Writer_switch, METH_O,
     "switch(fd): records submitted from now on go to fd (a new, empty file)"},
    {"status", (PyCFunction)Writer_status, METH_NOARGS,
     "status() -> (durable, failed, errno)"},
    {"reset", (PyCFunction)Writer_reset, METH_NOARGS, "reset(): take records again"},
    {"drain", (PyCFunction)Writer_drain, METH_NOARGS,
     "drain(): until everything submitted is written or failed"},
    {"stop", (PyCFunction)Writer_stop, METH_NOARGS,
     "stop(): write what is pending, then end the thread"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "smtpapi_milter._native.journal_writer.Writer",
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Writer(fd, wake_fd): appends records to fd from a thread of its own, "
              "fdatasync per batch, one write to wake_fd per batch",
    .tp_new = Writer_new,
    .tp_init = (initproc)Writer_init,
    .tp_dealloc = (destructor)Writer_dealloc,
    .tp_methods = Writer_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "smtpapi_milter._native.journal_writer",
    .m_doc = "The tracker's journal writer thread, without the GIL.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit_journal_writer(void) {
    if (PyType_Ready(&WriterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&WriterType);
    if (PyModule_AddObject(m, "Writer", (PyObject *)&WriterType) < 0) {
        Py_DECREF(&WriterType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
