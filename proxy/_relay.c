/* The relay core: pass-through sessions relayed by one C thread, off the event loop.
 *
 * A session that nothing inspects (an unrestricted user, no audit, no TLS) is,
 * once READY, a byte relay that only counts statements in flight: the same work
 * as the header walks of proxy/wire/walk.py, but every chunk through the event
 * loop costs a Python callback and a transport write each way. The server hands
 * such a session's two sockets (dup'ed, its transports closed) to this module:
 * one pthread with its own epoll set relays them without the GIL, walks the
 * 5-byte headers in both directions, and tells the event loop only what it must
 * act on, through an eventfd it watches:
 *
 *   (id, EV_CLOSED, cancel, 0)               the pair is closed; cancel: the client
 *                                            left with a statement in flight
 *   (id, EV_CLIENT_VIOLATION, tag, length)   a client message of invalid length:
 *   (id, EV_BACKEND_VIOLATION, tag, length)  the pair holds (reads nothing more)
 *                                            until Python calls Pair.close(error)
 *
 * Python keeps everything else: cancel requests, graceful shutdown (Pair.in_flight,
 * Pair.close(final bytes)), the connection count, the error texts.
 *
 * Per direction a fixed buffer: bytes read are walked, the whole headers checked,
 * and written on; while any are unsent, the source is not read (backpressure,
 * bounded memory). A partial header (< 5 bytes) waits for the rest so that no
 * byte of an invalid message is forwarded. The thread owns the epoll set and the
 * live pairs; Python reaches it only through the command queue (mutex + eventfd).
 * A pair is freed when both the thread and the Python Pair object let go of it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)
#define MAX_EVENTS 64

enum { CLIENT = 0, BACKEND = 1 };                 /* endpoints */
enum { TO_BACKEND = 0, TO_CLIENT = 1 };           /* streams: stream i is read from endpoint i, written to the other */
#define SOURCE(which) (which)
#define DESTINATION(which) (1 - (which))
enum { RELAYING, HELD, DRAIN_TO_CLIENT, DRAIN_TO_BACKEND, DEAD };
enum { EV_CLOSED = 0, EV_CLIENT_VIOLATION = 1, EV_BACKEND_VIOLATION = 2 };
enum { CMD_ADD, CMD_CLOSE };

typedef struct pair pair;

typedef struct {
    pair *owner;
    int fd;          /* -1 once closed */
    uint32_t mask;   /* interest registered with epoll */
    int hup;         /* the peer hung up while unread: out of epoll, read directly once drained */
} endpoint;

typedef struct {
    unsigned char *buf;
    size_t cap;
    size_t head;       /* buf[head:fwd]: checked, still to write */
    size_t fwd;
    size_t tail;       /* buf[fwd:tail]: a partial header, or (once an X is seen) nothing */
    size_t body_left;  /* bytes of the current message's body not read yet */
    size_t msg_start;  /* where in buf that message began; SIZE_MAX once it is (partly) written */
    int status_next;   /* backend stream: the next body byte is a ReadyForQuery status */
} stream;

struct pair {
    long long id;
    long long limit;   /* largest client message */
    endpoint ends[2];
    stream streams[2];
    int in_flight;     /* atomic: Query/Sync/FunctionCall sent, not yet answered by ReadyForQuery */
    int status;        /* atomic: the last ReadyForQuery status byte */
    int mode;          /* thread-owned */
    int cancel_on_close;
    int terminated;    /* the client's Terminate went to the backend */
    int close_done;    /* a Pair.close was carried out (later ones do nothing) */
    int refs;          /* atomic: the Python Pair, the thread while live, each queued command */
    pair *prev, *next; /* the thread's live list */
};

typedef struct {
    int kind;
    pair *p;
    unsigned char *final;  /* CMD_CLOSE: bytes for the client before closing (owned by the command) */
    size_t final_len;
} command;

typedef struct {
    long long id;
    int kind;
    long long a, b;
} event;

typedef struct {
    PyObject_HEAD
    int epfd, wakefd, notifyfd;
    pthread_t thread;
    int running;
    int stopping;          /* atomic */
    pthread_mutex_t lock;  /* guards commands and events */
    command *commands;
    size_t ncommands, commands_cap;
    event *events;
    size_t nevents, events_cap;
    pair live;             /* sentinel of the live list (thread-owned) */
    pair **unref;          /* pairs to let go of at the end of an epoll batch (thread-owned) */
    size_t nunref, unref_cap;
} Core;

typedef struct {
    PyObject_HEAD
    Core *core;
    pair *p;
} Pair;

static PyTypeObject CoreType, PairType;

static inline uint32_t
be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void
pair_unref(pair *p)
{
    if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        free(p->streams[0].buf);
        free(p->streams[1].buf);
        free(p);
    }
}

/* -- thread side ------------------------------------------------------------------ */

static int
grow(void **array, size_t *cap, size_t need, size_t item)
{
    if (need <= *cap)
        return 0;
    size_t cap2 = *cap ? *cap * 2 : 16;
    while (cap2 < need)
        cap2 *= 2;
    void *a = realloc(*array, cap2 * item);
    if (a == NULL)
        return -1;
    *array = a;
    *cap = cap2;
    return 0;
}

static void
post(Core *c, long long id, int kind, long long a, long long b)
{
    uint64_t one = 1;
    pthread_mutex_lock(&c->lock);
    if (grow((void **)&c->events, &c->events_cap, c->nevents + 1, sizeof(event)) == 0)
        c->events[c->nevents++] = (event){id, kind, a, b};
    pthread_mutex_unlock(&c->lock);
    ssize_t n = write(c->notifyfd, &one, sizeof one);
    (void)n;  /* the eventfd cannot overflow here; EAGAIN would mean a wake-up is pending anyway */
}

static void
defer_unref(Core *c, pair *p)
{
    if (grow((void **)&c->unref, &c->unref_cap, c->nunref + 1, sizeof(pair *)) == 0)
        c->unref[c->nunref++] = p;
    /* else: leaked rather than freed under an event still in the batch */
}

static void
close_end(Core *c, endpoint *e)
{
    if (e->fd < 0)
        return;
    /* Explicitly: epoll watches the open file, which another descriptor may still hold. */
    epoll_ctl(c->epfd, EPOLL_CTL_DEL, e->fd, NULL);
    close(e->fd);
    e->fd = -1;
}

/* Has the backend got whole messages only, nothing unsent (a Terminate may follow)? A partial
 * header held back here was never sent. */
static int
at_boundary(const stream *s)
{
    return s->head == s->fwd && s->body_left == 0;
}

/* Close the backend, with a Terminate first where one fits (so it ends the session cleanly). */
static void
close_backend(Core *c, pair *p)
{
    static const unsigned char terminate[5] = {'X', 0, 0, 0, 4};
    if (p->ends[BACKEND].fd >= 0 && !p->terminated && at_boundary(&p->streams[TO_BACKEND]))
        (void)!send(p->ends[BACKEND].fd, terminate, sizeof terminate, MSG_NOSIGNAL | MSG_DONTWAIT);
    close_end(c, &p->ends[BACKEND]);
}

static void
finish(Core *c, pair *p)
{
    if (p->mode == DEAD)
        return;
    close_end(c, &p->ends[CLIENT]);
    close_backend(c, p);
    p->mode = DEAD;
    p->prev->next = p->next;
    p->next->prev = p->prev;
    post(c, p->id, EV_CLOSED, p->cancel_on_close, 0);
    defer_unref(c, p);
}

static int
in_flight_now(pair *p)
{
    return __atomic_load_n(&p->in_flight, __ATOMIC_RELAXED);
}

/* The client is gone (EOF, error, failed write): cancel what it left running, close. */
static void
client_gone(Core *c, pair *p)
{
    if (p->mode == RELAYING || p->mode == HELD)
        p->cancel_on_close = in_flight_now(p) > 0;
    finish(c, p);
}

/* The backend is gone: what it sent still goes to the client, then the pair closes. */
static void
backend_gone(Core *c, pair *p)
{
    stream *s = &p->streams[TO_CLIENT];
    close_end(c, &p->ends[BACKEND]);
    if (p->mode == DRAIN_TO_BACKEND) {
        finish(c, p);
        return;
    }
    p->mode = DRAIN_TO_CLIENT;
    s->fwd = s->tail;  /* a truncated last message too, as a byte relay would */
    if (s->head == s->fwd)
        finish(c, p);
}

/* Endpoint ``side`` is gone (EOF, error, failed write). */
static void
gone(Core *c, pair *p, int side)
{
    if (side == CLIENT)
        client_gone(c, p);
    else
        backend_gone(c, p);
}

/* Where the body of the current message goes on from ``pos`` (at most to ``end``). */
static inline size_t
skip_body(stream *s, size_t pos, size_t end)
{
    size_t take = s->body_left < end - pos ? s->body_left : end - pos;
    s->body_left -= take;
    return pos + take;
}

static void flush(Core *c, pair *p, int which);

/* Walk the newly read bytes of the client stream; 1: a violation was posted, 2: Terminate seen. */
static int
walk_client(Core *c, pair *p, stream *s)
{
    size_t pos = s->fwd, end = s->tail;
    while (pos < end) {
        if (s->body_left) {
            pos = skip_body(s, pos, end);
            continue;
        }
        if (end - pos < 5)
            break;
        unsigned char tag = s->buf[pos];
        uint32_t length = be32(s->buf + pos + 1);
        if (length < 4 || (long long)length > p->limit) {
            s->fwd = pos;
            s->tail = pos;  /* nothing of the invalid message goes on */
            post(c, p->id, EV_CLIENT_VIOLATION, tag, length);
            return 1;
        }
        if (tag == 'Q' || tag == 'S' || tag == 'F')
            __atomic_add_fetch(&p->in_flight, 1, __ATOMIC_RELAXED);
        pos += 5;
        s->body_left = length - 4;
        if (tag == 'X') {
            p->terminated = 1;
            s->fwd = s->tail = skip_body(s, pos, end);  /* whatever follows a Terminate is dropped */
            s->body_left = 0;
            return 2;
        }
    }
    s->fwd = pos;
    return 0;
}

/* Walk the newly read bytes of the backend stream, noting each ReadyForQuery; 1: a violation. */
static int
walk_backend(Core *c, pair *p, stream *s)
{
    size_t pos = s->fwd, end = s->tail;
    while (pos < end) {
        if (s->body_left) {
            if (s->status_next) {
                int left = in_flight_now(p);
                __atomic_store_n(&p->in_flight, left > 0 ? left - 1 : 0, __ATOMIC_RELAXED);
                __atomic_store_n(&p->status, s->buf[pos], __ATOMIC_RELAXED);
                s->status_next = 0;
            }
            pos = skip_body(s, pos, end);
            continue;
        }
        if (end - pos < 5)
            break;
        unsigned char tag = s->buf[pos];
        uint32_t length = be32(s->buf + pos + 1);
        if (length < 4) {
            s->fwd = pos;
            s->tail = pos;
            post(c, p->id, EV_BACKEND_VIOLATION, tag, length);
            return 1;
        }
        s->status_next = tag == 'Z' && length > 4;
        s->msg_start = pos;
        pos += 5;
        s->body_left = length - 4;
    }
    s->fwd = pos;
    return 0;
}

/* Write the checked bytes of stream ``which``; finishes a draining pair once its stream is empty. */
static void
flush(Core *c, pair *p, int which)
{
    stream *s = &p->streams[which];
    endpoint *dst = &p->ends[DESTINATION(which)];
    if (dst->fd < 0) {
        if ((p->mode == DRAIN_TO_CLIENT && which == TO_CLIENT) || (p->mode == DRAIN_TO_BACKEND && which == TO_BACKEND))
            finish(c, p);  /* nobody left to drain to */
        return;
    }
    while (s->head < s->fwd) {
        ssize_t n = send(dst->fd, s->buf + s->head, s->fwd - s->head, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            gone(c, p, DESTINATION(which));
            return;
        }
        s->head += (size_t)n;
    }
    if (s->head == s->fwd) {
        size_t rest = s->tail - s->fwd;
        if (rest && s->fwd)
            memmove(s->buf, s->buf + s->fwd, rest);
        s->head = s->fwd = 0;
        s->tail = rest;
        s->msg_start = SIZE_MAX;  /* the current message, if any, began in what was just written */
        if ((p->mode == DRAIN_TO_CLIENT && which == TO_CLIENT) || (p->mode == DRAIN_TO_BACKEND && which == TO_BACKEND))
            finish(c, p);
    }
}

/* One read from the source of stream ``which``, walked and written on; 0 if nothing was read. */
static int
pump(Core *c, pair *p, int which)
{
    stream *s = &p->streams[which];
    endpoint *src = &p->ends[SOURCE(which)];
    ssize_t n;
    if (src->fd < 0 || s->tail >= s->cap)
        return 0;
    do
        n = recv(src->fd, s->buf + s->tail, s->cap - s->tail, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (n <= 0) {
        gone(c, p, SOURCE(which));
        return 0;
    }
    s->tail += (size_t)n;
    int r = which == TO_BACKEND ? walk_client(c, p, s) : walk_backend(c, p, s);
    if (r == 1)
        p->mode = HELD;
    else if (r == 2) {
        p->cancel_on_close = in_flight_now(p) > 0;
        p->mode = DRAIN_TO_BACKEND;
        close_end(c, &p->ends[CLIENT]);
        if (s->head == s->fwd) {  /* an empty Terminate-only chunk cannot be, but stay safe */
            finish(c, p);
            return 1;
        }
    }
    flush(c, p, which);
    return 1;
}

static void
update_interest(Core *c, pair *p)
{
    const stream *up = &p->streams[TO_BACKEND], *down = &p->streams[TO_CLIENT];
    uint32_t want[2];
    int reading = p->mode == RELAYING;
    want[CLIENT] = (reading && up->head == up->fwd ? EPOLLIN : 0) | (down->head < down->fwd ? EPOLLOUT : 0);
    want[BACKEND] = (reading && down->head == down->fwd ? EPOLLIN : 0) | (up->head < up->fwd ? EPOLLOUT : 0);
    for (int i = 0; i < 2; i++) {
        endpoint *e = &p->ends[i];
        if (e->fd >= 0 && !e->hup && e->mask != want[i]) {
            struct epoll_event ev = {.events = want[i], .data.ptr = e};
            epoll_ctl(c->epfd, EPOLL_CTL_MOD, e->fd, &ev);
            e->mask = want[i];
        }
    }
}

/* Read a hung-up peer's last bytes while its stream has room (the read of EOF ends the pair). */
static void
resume_hung_up(Core *c, pair *p)
{
    for (int which = 0; which < 2; which++) {
        stream *s = &p->streams[which];
        endpoint *src = &p->ends[SOURCE(which)];
        while (p->mode == RELAYING && src->fd >= 0 && src->hup && s->head == s->fwd) {
            if (!pump(c, p, which)) {
                if (p->mode == RELAYING && src->fd >= 0)  /* no EOF after a hang-up: never wait for more */
                    gone(c, p, SOURCE(which));
                break;
            }
        }
    }
}

static void
on_ready(Core *c, endpoint *e, uint32_t events)
{
    pair *p = e->owner;
    int side = e == &p->ends[CLIENT] ? CLIENT : BACKEND;
    if (events & EPOLLOUT)
        flush(c, p, DESTINATION(side));  /* the stream written to this endpoint */
    if (p->mode == DEAD || e->fd < 0)
        return;
    int which = SOURCE(side);  /* the stream this endpoint feeds */
    if ((events & EPOLLIN) && p->mode == RELAYING)
        pump(c, p, which);
    else if ((events & (EPOLLHUP | EPOLLERR)) == EPOLLHUP && p->mode == RELAYING) {
        /* The peer closed while this side is paused (its stream has unsent bytes): what it sent
         * before closing is still to be read. Out of epoll (HUP is level-triggered, whatever the
         * mask), and read directly once the stream has drained (resume_hung_up). */
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, e->fd, NULL);
        e->hup = 1;
    } else if (events & (EPOLLHUP | EPOLLERR)) {
        /* reported even when not asked for: the peer is gone while this side is not being read */
        gone(c, p, side);
    }
    resume_hung_up(c, p);
    if (p->mode != DEAD)
        update_interest(c, p);
}

/* Pair.close: the final bytes go to the client after what is pending, then the pair closes. */
static void
close_requested(Core *c, pair *p, const unsigned char *final, size_t final_len)
{
    stream *s = &p->streams[TO_CLIENT];
    if (p->mode == DEAD || p->close_done)
        return;
    p->close_done = 1;
    if (p->mode == DRAIN_TO_BACKEND || p->ends[CLIENT].fd < 0) {
        finish(c, p);  /* the client is gone already: nobody to tell */
        return;
    }
    close_backend(c, p);  /* now: nothing more of its answers can reach the client */
    /* The final bytes must start on a message boundary: drop a partial backend header, and the
     * part of an unfinished message not written yet (if none of it was). */
    if (s->body_left && s->msg_start != SIZE_MAX && s->msg_start >= s->head)
        s->fwd = s->msg_start;
    s->tail = s->fwd;
    if (final_len) {
        if (s->cap - s->tail < final_len) {
            unsigned char *b = realloc(s->buf, s->tail + final_len);
            if (b == NULL) {
                finish(c, p);
                return;
            }
            s->buf = b;
            s->cap = s->tail + final_len;
        }
        memcpy(s->buf + s->tail, final, final_len);
        s->fwd = s->tail = s->tail + final_len;
    }
    p->mode = DRAIN_TO_CLIENT;
    flush(c, p, TO_CLIENT);
    if (p->mode != DEAD)
        update_interest(c, p);
}

static void
add_pair(Core *c, pair *p)
{
    for (int i = 0; i < 2; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &p->ends[i]};
        p->ends[i].mask = EPOLLIN;
        if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, p->ends[i].fd, &ev) < 0) {
            close(p->ends[i].fd);  /* never registered */
            p->ends[i].fd = -1;
        }
    }
    p->next = c->live.next;
    p->prev = &c->live;
    c->live.next->prev = p;
    c->live.next = p;
    if (p->ends[CLIENT].fd < 0 || p->ends[BACKEND].fd < 0)
        finish(c, p);
}

static void
take_commands(Core *c)
{
    uint64_t count;
    ssize_t n = read(c->wakefd, &count, sizeof count);
    (void)n;
    pthread_mutex_lock(&c->lock);
    command *cmds = c->commands;
    size_t ncmds = c->ncommands;
    c->commands = NULL;
    c->ncommands = c->commands_cap = 0;
    pthread_mutex_unlock(&c->lock);
    for (size_t i = 0; i < ncmds; i++) {
        if (cmds[i].kind == CMD_ADD)
            add_pair(c, cmds[i].p);  /* the command's reference becomes the thread's */
        else {
            close_requested(c, cmds[i].p, cmds[i].final, cmds[i].final_len);
            free(cmds[i].final);
            defer_unref(c, cmds[i].p);
        }
    }
    free(cmds);
}

static void *
relay_main(void *arg)
{
    Core *c = arg;
    struct epoll_event evs[MAX_EVENTS];
    while (!__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE)) {
        int n = epoll_wait(c->epfd, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < n; i++) {
            endpoint *e = evs[i].data.ptr;
            if (e == NULL)
                take_commands(c);
            else if (e->owner->mode != DEAD && e->fd >= 0)
                on_ready(c, e, evs[i].events);
        }
        for (size_t i = 0; i < c->nunref; i++)
            pair_unref(c->unref[i]);
        c->nunref = 0;
    }
    take_commands(c);  /* adds queued before the stop are closed below with the rest */
    while (c->live.next != &c->live)
        finish(c, c->live.next);
    for (size_t i = 0; i < c->nunref; i++)
        pair_unref(c->unref[i]);
    c->nunref = 0;
    return NULL;
}

/* -- Python side ------------------------------------------------------------------- */

static int
enqueue(Core *c, int kind, pair *p, unsigned char *final, size_t final_len)
{
    uint64_t one = 1;
    int ok;
    pthread_mutex_lock(&c->lock);
    ok = grow((void **)&c->commands, &c->commands_cap, c->ncommands + 1, sizeof(command)) == 0;
    if (ok)
        c->commands[c->ncommands++] = (command){kind, p, final, final_len};
    pthread_mutex_unlock(&c->lock);
    if (!ok)
        return -1;
    ssize_t n = write(c->wakefd, &one, sizeof one);
    (void)n;
    return 0;
}

static void
core_stop_thread(Core *c)
{
    if (!c->running)
        return;
    uint64_t one = 1;
    __atomic_store_n(&c->stopping, 1, __ATOMIC_RELEASE);
    ssize_t n = write(c->wakefd, &one, sizeof one);
    (void)n;
    Py_BEGIN_ALLOW_THREADS
    pthread_join(c->thread, NULL);
    Py_END_ALLOW_THREADS
    c->running = 0;
}

static PyObject *
Core_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, ":Core", names))
        return NULL;
    Core *c = (Core *)type->tp_alloc(type, 0);
    if (c == NULL)
        return NULL;
    c->epfd = c->wakefd = c->notifyfd = -1;
    c->live.next = c->live.prev = &c->live;
    pthread_mutex_init(&c->lock, NULL);
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    c->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    c->notifyfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->epfd < 0 || c->wakefd < 0 || c->notifyfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(c);
        return NULL;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->wakefd, &ev) < 0 ||
        (errno = pthread_create(&c->thread, NULL, relay_main, c)) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(c);
        return NULL;
    }
    c->running = 1;
    return (PyObject *)c;
}

static void
Core_dealloc(Core *c)
{
    core_stop_thread(c);
    for (size_t i = 0; i < c->ncommands; i++) {
        free(c->commands[i].final);
        pair_unref(c->commands[i].p);
    }
    free(c->commands);
    free(c->events);
    free(c->unref);
    if (c->epfd >= 0)
        close(c->epfd);
    if (c->wakefd >= 0)
        close(c->wakefd);
    if (c->notifyfd >= 0)
        close(c->notifyfd);
    pthread_mutex_destroy(&c->lock);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

PyDoc_STRVAR(Core_add_doc,
"add(id, client_fd, backend_fd, in_flight, status, max_message_size) -> Pair\n\n"
"Relay the two connected, non-blocking sockets from now on; the core owns (and closes) both\n"
"descriptors, also when this raises after taking them.");

static PyObject *
Core_add(Core *c, PyObject *args)
{
    long long id, limit;
    int cfd, bfd, in_flight, status;
    if (!PyArg_ParseTuple(args, "LiiiCL:add", &id, &cfd, &bfd, &in_flight, &status, &limit))
        return NULL;
    if (!c->running || __atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE)) {
        close(cfd);
        close(bfd);
        PyErr_SetString(PyExc_RuntimeError, "the relay core is stopped");
        return NULL;
    }
    pair *p = calloc(1, sizeof(pair));
    if (p == NULL || (p->streams[0].buf = malloc(BUF_SIZE)) == NULL ||
        (p->streams[1].buf = malloc(BUF_SIZE)) == NULL) {
        if (p)
            free(p->streams[0].buf);
        free(p);
        close(cfd);
        close(bfd);
        return PyErr_NoMemory();
    }
    Pair *obj = PyObject_New(Pair, &PairType);
    if (obj == NULL) {
        free(p->streams[0].buf);
        free(p->streams[1].buf);
        free(p);
        close(cfd);
        close(bfd);
        return NULL;
    }
    p->id = id;
    p->limit = limit;
    p->streams[0].cap = p->streams[1].cap = BUF_SIZE;
    p->streams[0].msg_start = p->streams[1].msg_start = SIZE_MAX;
    p->in_flight = in_flight;
    p->status = status;
    p->mode = RELAYING;
    p->refs = 2;  /* the Pair object; the ADD command, then the thread */
    for (int i = 0; i < 2; i++)
        p->ends[i].owner = p;
    p->ends[CLIENT].fd = cfd;
    p->ends[BACKEND].fd = bfd;
    for (int i = 0; i < 2; i++) {  /* shared with the closed transports' descriptors, but make sure */
        int flags = fcntl(p->ends[i].fd, F_GETFL);
        if (flags >= 0)
            fcntl(p->ends[i].fd, F_SETFL, flags | O_NONBLOCK);
    }
    Py_INCREF(c);
    obj->core = c;
    obj->p = p;
    if (enqueue(c, CMD_ADD, p, NULL, 0) < 0) {
        close(cfd);
        close(bfd);
        p->refs = 1;
        Py_DECREF(obj);
        return PyErr_NoMemory();
    }
    return (PyObject *)obj;
}

PyDoc_STRVAR(Core_events_doc,
"events() -> list of (id, kind, a, b)\n\n"
"What happened since the last call: (id, 0, cancel, 0) a pair closed; (id, 1 | 2, tag, length)\n"
"a client (1) or backend (2) message of invalid length, the pair waiting for close().");

static PyObject *
Core_events(Core *c, PyObject *unused)
{
    uint64_t count;
    ssize_t n = read(c->notifyfd, &count, sizeof count);  /* reset first: a later post wakes again */
    (void)n;
    pthread_mutex_lock(&c->lock);
    event *evs = c->events;
    size_t nevs = c->nevents;
    c->events = NULL;
    c->nevents = c->events_cap = 0;
    pthread_mutex_unlock(&c->lock);
    PyObject *out = PyList_New((Py_ssize_t)nevs);
    for (size_t i = 0; out != NULL && i < nevs; i++) {
        PyObject *item = Py_BuildValue("(LiLL)", evs[i].id, evs[i].kind, evs[i].a, evs[i].b);
        if (item == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, (Py_ssize_t)i, item);
    }
    free(evs);
    return out;
}

static PyObject *
Core_stop(Core *c, PyObject *unused)
{
    core_stop_thread(c);
    Py_RETURN_NONE;
}

static PyObject *
Core_notify_fd(Core *c, void *closure)
{
    return PyLong_FromLong(c->notifyfd);
}

static PyMethodDef Core_methods[] = {
    {"add", (PyCFunction)Core_add, METH_VARARGS, Core_add_doc},
    {"events", (PyCFunction)Core_events, METH_NOARGS, Core_events_doc},
    {"stop", (PyCFunction)Core_stop, METH_NOARGS, "Close every pair and end the thread."},
    {NULL},
};

static PyGetSetDef Core_getset[] = {
    {"notify_fd", (getter)Core_notify_fd, NULL, "An eventfd readable when events() has something.", NULL},
    {NULL},
};

static void
Pair_dealloc(Pair *self)
{
    pair_unref(self->p);
    Py_DECREF(self->core);
    PyObject_Free(self);
}

PyDoc_STRVAR(Pair_close_doc,
"close(final=b'')\n\n"
"Stop relaying: the backend gets a Terminate and is closed, the client gets what is pending,\n"
"then ``final``, then is closed. An EV_CLOSED event follows (unless the pair closed already).");

static PyObject *
Pair_close(Pair *self, PyObject *args)
{
    Py_buffer final = {0};
    if (!PyArg_ParseTuple(args, "|y*:close", &final))
        return NULL;
    pair *p = self->p;
    Core *c = self->core;
    unsigned char *copy = NULL;
    size_t len = final.buf != NULL ? (size_t)final.len : 0;
    if (len && (copy = malloc(len)) == NULL) {
        PyBuffer_Release(&final);
        return PyErr_NoMemory();
    }
    if (len)
        memcpy(copy, final.buf, len);
    PyBuffer_Release(&final);
    if (!c->running) {  /* stopped: every pair is closed already */
        free(copy);
        Py_RETURN_NONE;
    }
    __atomic_add_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);
    if (enqueue(c, CMD_CLOSE, p, copy, len) < 0) {
        free(copy);
        pair_unref(p);
        return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

static PyObject *
Pair_in_flight(Pair *self, void *closure)
{
    return PyLong_FromLong(__atomic_load_n(&self->p->in_flight, __ATOMIC_RELAXED));
}

static PyObject *
Pair_transaction_status(Pair *self, void *closure)
{
    return PyUnicode_FromOrdinal(__atomic_load_n(&self->p->status, __ATOMIC_RELAXED) & 0xff);  /* as chr(byte) */
}

static PyMethodDef Pair_methods[] = {
    {"close", (PyCFunction)Pair_close, METH_VARARGS, Pair_close_doc},
    {NULL},
};

static PyGetSetDef Pair_getset[] = {
    {"in_flight", (getter)Pair_in_flight, NULL, "Statements sent and not yet answered by ReadyForQuery.", NULL},
    {"transaction_status", (getter)Pair_transaction_status, NULL, "The last ReadyForQuery status.", NULL},
    {NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proxy._relay.Core",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One relay thread and its pairs.",
    .tp_new = Core_new,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
    .tp_getset = Core_getset,
};

static PyTypeObject PairType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proxy._relay.Pair",
    .tp_basicsize = sizeof(Pair),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A client and backend socket relayed by the core (made by Core.add).",
    .tp_dealloc = (destructor)Pair_dealloc,
    .tp_methods = Pair_methods,
    .tp_getset = Pair_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "proxy._relay", "The C relay thread of pass-through sessions.", -1, NULL,
};

PyMODINIT_FUNC
PyInit__relay(void)
{
    if (PyType_Ready(&CoreType) < 0 || PyType_Ready(&PairType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CoreType);
    Py_INCREF(&PairType);
    if (PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0 ||
        PyModule_AddObject(m, "Pair", (PyObject *)&PairType) < 0 ||
        PyModule_AddIntConstant(m, "EV_CLOSED", EV_CLOSED) < 0 ||
        PyModule_AddIntConstant(m, "EV_CLIENT_VIOLATION", EV_CLIENT_VIOLATION) < 0 ||
        PyModule_AddIntConstant(m, "EV_BACKEND_VIOLATION", EV_BACKEND_VIOLATION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
