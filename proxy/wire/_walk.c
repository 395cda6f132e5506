/* Message-header walks of the proxy's hot path, in C.
 *
 * The same functions as the pure-Python ones in proxy/wire/walk.py (which
 * stay the reference and the fallback when this module is not built); each
 * reads only 5-byte message headers of a bytes object and never writes into
 * it. tests/test_walk_speedups.py checks both give the same answers.
 *
 * Every index is checked against the buffer size before it is read: a length
 * field is untrusted input, so `pos` may jump past the end, which ends the
 * walk (the messages are then not whole).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static inline uint32_t
be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline int
is_sync(unsigned char tag)
{
    return tag == 'Q' || tag == 'S' || tag == 'F';
}

/* Arguments shared by the client walks: data (bytes), table (bytes of 256), limit (int). */
static int
client_args(PyObject *const *args, Py_ssize_t nargs, const char *name, const unsigned char **data,
            Py_ssize_t *size, const unsigned char **table, long long *limit)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "%s() takes 3 arguments", name);
        return -1;
    }
    if (!PyBytes_Check(args[0]) || !PyBytes_Check(args[1]) || PyBytes_GET_SIZE(args[1]) != 256) {
        PyErr_Format(PyExc_TypeError, "%s(): data and table must be bytes, table of 256", name);
        return -1;
    }
    *limit = PyLong_AsLongLong(args[2]);
    if (*limit == -1 && PyErr_Occurred())
        return -1;
    *data = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    *size = PyBytes_GET_SIZE(args[0]);
    *table = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    return 0;
}

/* client_syncs(data, table, limit) -> int
 *
 * How many sync messages (Query, Sync, FunctionCall) ``data`` holds if it is
 * made of whole messages of valid length (4..limit) none of whose tags has a
 * non-zero entry in ``table``; else -1.
 */
static PyObject *
client_syncs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *p, *table;
    Py_ssize_t size, pos = 0;
    long long limit;
    long syncs = 0;

    if (client_args(args, nargs, "client_syncs", &p, &size, &table, &limit) < 0)
        return NULL;
    while (size - pos >= 5) {
        unsigned char tag = p[pos];
        uint32_t length = be32(p + pos + 1);
        if (table[tag] || length < 4 || (long long)length > limit)
            return PyLong_FromLong(-1);
        syncs += is_sync(tag);
        pos += 1 + (Py_ssize_t)length;
    }
    return PyLong_FromLong(pos == size ? syncs : -1);
}

/* governed_syncs(data, table, limit) -> None | (syncs, binds)
 *
 * As client_syncs, for a governed session: a tag whose table entry is 2
 * (Bind) does not end the walk but has its span recorded; ``binds`` is None
 * or the list [start, end, start, end, ...]. Only Sync counts as a sync here
 * (Query and FunctionCall are always inspected). None: not forwardable.
 */
static PyObject *
governed_syncs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *p, *table;
    Py_ssize_t size, pos = 0;
    long long limit;
    long syncs = 0;
    PyObject *binds = NULL, *result;

    if (client_args(args, nargs, "governed_syncs", &p, &size, &table, &limit) < 0)
        return NULL;
    while (size - pos >= 5) {
        unsigned char tag = p[pos];
        uint32_t length = be32(p + pos + 1);
        Py_ssize_t end = pos + 1 + (Py_ssize_t)length;
        if (length < 4 || (long long)length > limit)
            goto not_forwardable;
        if (table[tag]) {
            if (table[tag] != 2)
                goto not_forwardable;
            if (binds == NULL && (binds = PyList_New(0)) == NULL)
                return NULL;
            PyObject *start = PyLong_FromSsize_t(pos), *stop = PyLong_FromSsize_t(end);
            int failed = start == NULL || stop == NULL || PyList_Append(binds, start) < 0
                         || PyList_Append(binds, stop) < 0;
            Py_XDECREF(start);
            Py_XDECREF(stop);
            if (failed) {
                Py_DECREF(binds);
                return NULL;
            }
        }
        else if (tag == 'S') {
            syncs++;
        }
        pos = end;
    }
    if (pos != size)
        goto not_forwardable;
    result = Py_BuildValue("(lO)", syncs, binds != NULL ? binds : Py_None);
    Py_XDECREF(binds);
    return result;

not_forwardable:
    Py_XDECREF(binds);
    Py_RETURN_NONE;
}

/* backend_ready(data, rows, count_rows) -> (count, status, rows, remaining, tail, want_peek, done)
 *
 * Walks backend messages from a message boundary at the start of ``data``:
 * ``count`` ReadyForQuery messages whose status byte is in ``data``, the last
 * one's ``status`` (-1: none), DataRows counted into ``rows`` (reset at each
 * ReadyForQuery, whose count goes to the list ``done`` when ``count_rows``,
 * else ``done`` is None), the body bytes of the last message still to come
 * (``remaining``), a partial header at the end (``tail``, bytes or None) and
 * whether a ReadyForQuery's status byte is the first byte of the next chunk
 * (``want_peek``). ``count`` is -1 when a length field is below 4.
 */
static PyObject *
backend_ready(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *p;
    Py_ssize_t size, pos = 0, remaining = 0;
    long count = 0, status = -1;
    long long rows;
    int count_rows, want_peek = 0;
    PyObject *done = NULL, *tail = NULL, *result;

    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "backend_ready(data: bytes, rows: int, count_rows: bool)");
        return NULL;
    }
    rows = PyLong_AsLongLong(args[1]);
    if (rows == -1 && PyErr_Occurred())
        return NULL;
    count_rows = PyObject_IsTrue(args[2]);
    if (count_rows < 0)
        return NULL;
    if (count_rows && (done = PyList_New(0)) == NULL)
        return NULL;
    p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    size = PyBytes_GET_SIZE(args[0]);

    while (size - pos >= 5) {
        unsigned char tag = p[pos];
        uint32_t length = be32(p + pos + 1);
        Py_ssize_t end = pos + 1 + (Py_ssize_t)length;
        if (length < 4) {
            Py_XDECREF(done);
            return Py_BuildValue("(llLnOOO)", -1L, -1L, rows, (Py_ssize_t)0, Py_None, Py_False, Py_None);
        }
        if (tag == 'D') {
            rows++;
        }
        else if (tag == 'Z' && length > 4) {
            if (pos + 5 < size) {
                count++;
                status = p[pos + 5];
                if (count_rows) {
                    PyObject *n = PyLong_FromLongLong(rows);
                    if (n == NULL || PyList_Append(done, n) < 0) {
                        Py_XDECREF(n);
                        Py_DECREF(done);
                        return NULL;
                    }
                    Py_DECREF(n);
                    rows = 0;
                }
            }
            else {
                want_peek = 1;
            }
        }
        if (end > size) {
            remaining = end - size;
            pos = size;
            break;
        }
        pos = end;
    }
    if (pos < size) {
        tail = PyBytes_FromStringAndSize((const char *)p + pos, size - pos);
        if (tail == NULL) {
            Py_XDECREF(done);
            return NULL;
        }
    }
    result = Py_BuildValue("(llLnOOO)", count, status, rows, remaining, tail != NULL ? tail : Py_None,
                           want_peek ? Py_True : Py_False, done != NULL ? done : Py_None);
    Py_XDECREF(tail);
    Py_XDECREF(done);
    return result;
}

/* The transports hand over bytes; anything else that holds bytes (bytearray, memoryview) is copied first. */
typedef PyObject *(*walk_fn)(PyObject *, PyObject *const *, Py_ssize_t);

static PyObject *
with_bytes(walk_fn fn, PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *copy, *argv[3], *result;
    if (nargs != 3 || PyBytes_Check(args[0]))
        return fn(module, args, nargs);
    if ((copy = PyBytes_FromObject(args[0])) == NULL)
        return NULL;
    argv[0] = copy;
    argv[1] = args[1];
    argv[2] = args[2];
    result = fn(module, argv, nargs);
    Py_DECREF(copy);
    return result;
}

static PyObject *
client_syncs_any(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return with_bytes(client_syncs, module, args, nargs);
}

static PyObject *
governed_syncs_any(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return with_bytes(governed_syncs, module, args, nargs);
}

static PyObject *
backend_ready_any(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return with_bytes(backend_ready, module, args, nargs);
}

static PyMethodDef walk_methods[] = {
    {"client_syncs", (PyCFunction)(void (*)(void))client_syncs_any, METH_FASTCALL,
     "client_syncs(data, table, limit) -> sync messages in data, or -1 if it is not forwardable as it is"},
    {"governed_syncs", (PyCFunction)(void (*)(void))governed_syncs_any, METH_FASTCALL,
     "governed_syncs(data, table, limit) -> None, or (syncs, Bind spans or None)"},
    {"backend_ready", (PyCFunction)(void (*)(void))backend_ready_any, METH_FASTCALL,
     "backend_ready(data, rows, count_rows) -> (count, status, rows, remaining, tail, want_peek, done)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef walk_module = {
    PyModuleDef_HEAD_INIT, "proxy.wire._walk",
    "Message-header walks of the proxy's hot path (C versions of proxy.wire.walk).", -1, walk_methods,
};

PyMODINIT_FUNC
PyInit__walk(void)
{
    return PyModule_Create(&walk_module);
}
