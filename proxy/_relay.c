/* The relay core: pass-through and governed sessions relayed by one C thread, off the event loop.
 *
 * A session that nothing inspects (an unrestricted user, no audit, no TLS) is,
 * once READY, a byte relay that only counts statements in flight (a governed one is
 * relayed between statements with a lane, below): the same work
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
 *   (id, EV_RETURNED, 0, 0)                  a governed pair met a message only Python
 *                                            may judge: Pair.take_back() gives it back
 *
 * A governed pair has a lane (see lane_message and proxy/session/lane.py): the Query
 * shapes, Parses and Binds this session's Python path already judged under the current
 * policy generation, passed here exactly as Python sends them; any other message
 * returns the pair, and every policy swap (invalidate_lanes) voids every lane.
 *
 * Python keeps everything else: cancel requests, graceful shutdown (Pair.in_flight,
 * Pair.close(final bytes)), the connection count, the error texts.
 *
 * Per direction a 64 KiB buffer: bytes read are walked, the whole headers checked,
 * and written on; while any are unsent, the source is not read (backpressure,
 * bounded memory; a lane's rewritten message may grow it for a while, see flush). A partial header (< 5 bytes) waits for the rest so that no
 * byte of an invalid message is forwarded. The thread owns the epoll set and the
 * live pairs; Python reaches it only through the command queue (mutex + eventfd).
 * A pair is freed when both the thread and the Python Pair object let go of it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fastkey_core.h"  /* rewrite/: the shape key, shared with rewrite/_fastkey.c */

#define BUF_SIZE (64 * 1024)
#define MAX_EVENTS 64

enum { CLIENT = 0, BACKEND = 1 };                 /* endpoints */
enum { TO_BACKEND = 0, TO_CLIENT = 1 };           /* streams: stream i is read from endpoint i, written to the other */
#define SOURCE(which) (which)
#define DESTINATION(which) (1 - (which))
/* RETURNING: a governed pair met a message only Python may judge: the client is not read, the
 * backend is relayed up to a message boundary, then the pair is RETURNED (out of epoll, its fds
 * kept for Pair.take_back). */
enum { RELAYING, HELD, DRAIN_TO_CLIENT, DRAIN_TO_BACKEND, RETURNING, RETURNED, DEAD };
enum { EV_CLOSED = 0, EV_CLIENT_VIOLATION = 1, EV_BACKEND_VIOLATION = 2, EV_RETURNED = 3 };
enum { CMD_ADD, CMD_CLOSE };

typedef struct pair pair;

/* What a governed pair may pass without Python (see lane_message): all judged by Python under the
 * policy generation ``generation``; immutable while the pair is relayed. */
typedef struct {
    unsigned char *key;       /* the shape key (fastkey_core.h) */
    size_t key_len;
    uint64_t hash;
    size_t nseg;              /* segments around the slots: norder + 1 */
    unsigned char **seg;
    size_t *seg_len;
    size_t *order;            /* for each slot of the output, the source literal that fills it */
} lane_template;

typedef struct {
    unsigned char *data;      /* a Parse body, or a statement name */
    size_t len;
    uint64_t hash;
    unsigned char *out;       /* a Parse: the whole message to send instead */
    size_t out_len;
} lane_entry;

typedef struct {
    long long generation;
    double valid_until;       /* seconds since the epoch: a policy's validity window opens or closes then */
    lane_template *templates;
    size_t ntemplates;
    lane_entry *parses, *binds;
    size_t nparses, nbinds;
} lane;

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
    lane *lane;        /* a governed pair's lane; NULL: a pass-through pair */
    long long lane_syncs;    /* Query/Sync messages the lane sent (thread-owned until RETURNED) */
    long long lane_readies;  /* ReadyForQuery messages relayed meanwhile */
    int lane_pc;             /* -1: no message passed; else whether a Parse went out in the open sync group */
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
    unsigned char *scratch;  /* the lane's shape keys and filled Queries (thread-owned) */
    size_t scratch_cap;
    fk_slot *slots;
    size_t slots_cap;
} Core;

typedef struct {
    PyObject_HEAD
    Core *core;
    pair *p;
} Pair;

static PyTypeObject CoreType, PairType;

static void lane_free(lane *l);

static inline uint32_t
be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void
pair_unref(pair *p)
{
    if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        for (int i = 0; i < 2; i++)
            if (p->ends[i].fd >= 0)
                close(p->ends[i].fd);  /* a RETURNED pair whose fds were never taken back */
        lane_free(p->lane);
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
    if (p->mode == DEAD || p->mode == RETURNED)
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
    if (p->mode == RELAYING || p->mode == HELD || p->mode == RETURNING)
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


/* -- the governed lane ---------------------------------------------------------------- */

/* Bumped (Python: invalidate_lanes) on every policy swap: a lane built under an older
 * generation passes nothing more, so no statement runs under a policy that was replaced. */
static long long lane_generation;

/* libpg_query's splitter, from pglast's own extension (use_parser): PostgreSQL's parser, thread-safe
 * (per-thread memory contexts), already run without the GIL by pglast.parser.split. The structs as
 * pglast 8's parser.pyx declares them (libpg_query 17); relay_thread.py calls use_parser for pglast 8+. */
typedef struct { int stmt_location; int stmt_len; } PgQuerySplitStmt;
typedef struct { PgQuerySplitStmt **stmts; int n_stmts; char *stderr_buffer; void *error; } PgQuerySplitResult;
static PgQuerySplitResult (*split_with_parser)(const char *);
static void (*free_split_result)(PgQuerySplitResult);

static double
wall_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);  /* time.time()'s clock, which the policies' validity epochs use */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t
fnv1a(const unsigned char *d, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 1099511628211ULL;
    return h;
}

static void
lane_free(lane *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->ntemplates; i++) {
        lane_template *t = &l->templates[i];
        free(t->key);
        for (size_t k = 0; t->seg != NULL && k < t->nseg; k++)
            free(t->seg[k]);
        free(t->seg);
        free(t->seg_len);
        free(t->order);
    }
    for (size_t i = 0; i < l->nparses; i++) {
        free(l->parses[i].data);
        free(l->parses[i].out);
    }
    for (size_t i = 0; i < l->nbinds; i++)
        free(l->binds[i].data);
    free(l->templates);
    free(l->parses);
    free(l->binds);
    free(l);
}

static const lane_entry *
lane_find(const lane_entry *entries, size_t n, const unsigned char *d, size_t len)
{
    uint64_t h = fnv1a(d, len);
    for (size_t i = 0; i < n; i++)
        if (entries[i].hash == h && entries[i].len == len && memcmp(entries[i].data, d, len) == 0)
            return &entries[i];
    return NULL;
}

/* Replace buf[pos:pos+old] of stream ``s`` with ``data``; -1 when out of memory. */
static int
splice_message(stream *s, size_t pos, size_t old, const unsigned char *data, size_t len)
{
    size_t need = s->tail - old + len;
    if (need > s->cap) {
        unsigned char *b = realloc(s->buf, need);
        if (b == NULL)
            return -1;
        s->buf = b;
        s->cap = need;
    }
    memmove(s->buf + pos + len, s->buf + pos + old, s->tail - pos - old);
    memcpy(s->buf + pos, data, len);
    s->tail = s->tail - old + len;
    return 0;
}

static int
grow_scratch(Core *c, size_t bytes, size_t slots)
{
    if (grow((void **)&c->scratch, &c->scratch_cap, bytes, 1) < 0 ||
        grow((void **)&c->slots, &c->slots_cap, slots, sizeof(fk_slot)) < 0)
        return -1;
    return 0;
}

/* The Query at buf[pos], of ``total`` bytes, filled into its shape's template in place: exactly
 * what rewrite.shapes gives for it (the same key, the same segments, the same check that the
 * client's text is one statement to PostgreSQL's parser). 0 when done; -1: Python judges it. */
static int
lane_query(Core *c, const lane *l, stream *s, size_t pos, size_t total)
{
    const unsigned char *body = s->buf + pos + 5;
    size_t n = total - 6;  /* the text, without its NUL */
    fk_ssize key_len, nslots;
    if (total < 6 || body[n] != 0 || l->ntemplates == 0 || split_with_parser == NULL)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (body[i] == 0 || body[i] >= 0x80)
            return -1;  /* an inner NUL is malformed; non-ASCII texts take the Python key */
    if (grow_scratch(c, 3 * n + 1, n + 1) < 0 ||
        !fk_scan((const char *)body, (fk_ssize)n, (char *)c->scratch, &key_len, c->slots, &nslots))
        return -1;
    uint64_t h = fnv1a(c->scratch, (size_t)key_len);
    const lane_template *t = NULL;
    for (size_t i = 0; i < l->ntemplates; i++) {
        const lane_template *u = &l->templates[i];
        if (u->hash == h && u->key_len == (size_t)key_len && memcmp(u->key, c->scratch, u->key_len) == 0) {
            t = u;
            break;
        }
    }
    if (t == NULL)
        return -1;
    size_t out_len = 5;
    for (size_t k = 0; k < t->nseg; k++) {
        out_len += t->seg_len[k];
        if (k + 1 < t->nseg) {
            if (t->order[k] >= (size_t)nslots)
                return -1;
            const fk_slot *lit = &c->slots[t->order[k]];
            out_len += (size_t)(lit->end - lit->start);
        }
    }
    out_len += 1;
    if (out_len - 1 > (size_t)INT32_MAX)
        return -1;
    PgQuerySplitResult split = split_with_parser((const char *)body);
    int one = split.error == NULL && split.n_stmts == 1;
    free_split_result(split);
    if (!one)
        return -1;
    /* the message is built in the scratch buffer, after the key (no longer needed) */
    if (grow_scratch(c, out_len, 0) < 0)
        return -1;
    unsigned char *out = c->scratch;
    uint32_t len32 = (uint32_t)(out_len - 1);
    out[0] = 'Q';
    out[1] = len32 >> 24;
    out[2] = len32 >> 16;
    out[3] = len32 >> 8;
    out[4] = len32;
    size_t at = 5;
    for (size_t k = 0; k < t->nseg; k++) {
        memcpy(out + at, t->seg[k], t->seg_len[k]);
        at += t->seg_len[k];
        if (k + 1 < t->nseg) {
            const fk_slot *lit = &c->slots[t->order[k]];
            memcpy(out + at, body + lit->start, (size_t)(lit->end - lit->start));
            at += (size_t)(lit->end - lit->start);
        }
    }
    out[at++] = 0;
    return splice_message(s, pos, total, out, at);
}

/* One whole client message of a governed pair at buf[pos] (``total`` bytes): 0 passed (perhaps
 * replaced in place), -1 Python must judge it. Only what the lane was built with passes: a Query
 * of a known shape, a Parse Python already judged (its rewrite), a Bind of a statement prepared
 * under the lane's policy, and Describe, Execute, Sync, Flush. */
static int
lane_message(Core *c, pair *p, stream *s, size_t pos, size_t total)
{
    const lane *l = p->lane;
    unsigned char tag = s->buf[pos];
    if (tag == 'D' || tag == 'E' || tag == 'S' || tag == 'H')
        return 0;
    if (__atomic_load_n(&lane_generation, __ATOMIC_ACQUIRE) != l->generation || !(wall_clock() < l->valid_until))
        return -1;
    if (tag == 'Q')
        return lane_query(c, l, s, pos, total);
    if (tag == 'P') {
        const lane_entry *e = lane_find(l->parses, l->nparses, s->buf + pos + 5, total - 5);
        return e == NULL ? -1 : splice_message(s, pos, total, e->out, e->out_len);
    }
    if (tag == 'B') {
        const unsigned char *body = s->buf + pos + 5, *end = s->buf + pos + total;
        const unsigned char *portal_end = memchr(body, 0, (size_t)(end - body));
        if (portal_end == NULL)
            return -1;
        const unsigned char *name = portal_end + 1;
        const unsigned char *name_end = name < end ? memchr(name, 0, (size_t)(end - name)) : NULL;
        if (name_end == NULL)
            return -1;
        return lane_find(l->binds, l->nbinds, name, (size_t)(name_end - name)) != NULL ? 0 : -1;
    }
    return -1;
}

/* walk_client for a governed pair: whole messages only, each passed by lane_message or left for
 * Python; 1: a violation was posted, 2: Terminate seen, 3: return the pair (s->fwd: the message). */
static int
walk_lane(Core *c, pair *p, stream *s)
{
    size_t pos = s->fwd;
    while (s->tail - pos >= 5) {
        unsigned char tag = s->buf[pos];
        uint32_t length = be32(s->buf + pos + 1);
        if (length < 4 || (long long)length > p->limit) {
            s->fwd = pos;
            s->tail = pos;
            post(c, p->id, EV_CLIENT_VIOLATION, tag, length);
            return 1;
        }
        size_t total = (size_t)length + 1;
        if (total > BUF_SIZE) {
            s->fwd = pos;
            return 3;  /* too large to hold whole here (whatever its tag): the event loop streams it */
        }
        if (tag == 'X') {
            if (s->tail - pos < total)
                break;
            p->terminated = 1;
            s->fwd = s->tail = pos + total;  /* whatever follows a Terminate is dropped */
            return 2;
        }
        if (s->tail - pos < total)
            break;
        if (lane_message(c, p, s, pos, total) < 0) {
            s->fwd = pos;
            return 3;
        }
        total = (size_t)be32(s->buf + pos + 1) + 1;  /* as replaced */
        if (tag == 'Q' || tag == 'S') {
            __atomic_add_fetch(&p->in_flight, 1, __ATOMIC_RELAXED);
            p->lane_syncs++;
            p->lane_pc = 0;
        }
        else if (tag == 'P')
            p->lane_pc = 1;
        pos += total;
    }
    s->fwd = pos;
    return 0;
}

/* A RETURNING pair whose judged bytes are all sent and whose backend stream is on a message
 * boundary leaves the thread: out of epoll, its fds kept for Pair.take_back. */
static void
try_return(Core *c, pair *p)
{
    const stream *up = &p->streams[TO_BACKEND], *down = &p->streams[TO_CLIENT];
    if (up->head != up->fwd || down->head != down->fwd || down->body_left)
        return;
    for (int i = 0; i < 2; i++)
        if (p->ends[i].fd >= 0)
            epoll_ctl(c->epfd, EPOLL_CTL_DEL, p->ends[i].fd, NULL);
    p->mode = RETURNED;
    p->prev->next = p->next;
    p->next->prev = p->prev;
    post(c, p->id, EV_RETURNED, 0, 0);
    defer_unref(c, p);
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
        p->lane_readies += s->status_next;  /* read only for a governed pair (take_back) */
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
        if (s->cap > BUF_SIZE && rest <= BUF_SIZE) {  /* grown for a long rewritten Query: back to size */
            unsigned char *b = realloc(s->buf, BUF_SIZE);
            if (b != NULL) {
                s->buf = b;
                s->cap = BUF_SIZE;
            }
        }
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
    int r = which == TO_CLIENT ? walk_backend(c, p, s) : p->lane != NULL ? walk_lane(c, p, s) : walk_client(c, p, s);
    if (r == 1)
        p->mode = HELD;
    else if (r == 3)
        p->mode = RETURNING;
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
    int reading = p->mode == RELAYING, backend_reading = reading || p->mode == RETURNING;
    want[CLIENT] = (reading && up->head == up->fwd ? EPOLLIN : 0) | (down->head < down->fwd ? EPOLLOUT : 0);
    want[BACKEND] = (backend_reading && down->head == down->fwd ? EPOLLIN : 0) | (up->head < up->fwd ? EPOLLOUT : 0);
    for (int i = 0; i < 2; i++) {
        endpoint *e = &p->ends[i];
        if (e->fd >= 0 && !e->hup && e->mask != want[i]) {
            struct epoll_event ev = {.events = want[i], .data.ptr = e};
            epoll_ctl(c->epfd, EPOLL_CTL_MOD, e->fd, &ev);
            e->mask = want[i];
        }
    }
}

/* Is stream ``which`` read in the pair's mode? (A returning pair reads only its backend.) */
static int
reads_stream(const pair *p, int which)
{
    return p->mode == RELAYING || (p->mode == RETURNING && which == TO_CLIENT);
}

/* Read a hung-up peer's last bytes while its stream has room (the read of EOF ends the pair). */
static void
resume_hung_up(Core *c, pair *p)
{
    for (int which = 0; which < 2; which++) {
        stream *s = &p->streams[which];
        endpoint *src = &p->ends[SOURCE(which)];
        while (reads_stream(p, which) && src->fd >= 0 && src->hup && s->head == s->fwd) {
            if (!pump(c, p, which)) {
                if (reads_stream(p, which) && src->fd >= 0)  /* no EOF after a hang-up: never wait for more */
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
    if ((events & EPOLLIN) && reads_stream(p, which))
        pump(c, p, which);
    else if ((events & (EPOLLHUP | EPOLLERR)) == EPOLLHUP && reads_stream(p, which)) {
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
    if (p->mode == RETURNING)
        try_return(c, p);
    if (p->mode != DEAD && p->mode != RETURNED)
        update_interest(c, p);
}

/* Pair.close: the final bytes go to the client after what is pending, then the pair closes. */
static void
close_requested(Core *c, pair *p, const unsigned char *final, size_t final_len)
{
    stream *s = &p->streams[TO_CLIENT];
    if (p->mode == DEAD || p->mode == RETURNED || p->close_done)
        return;  /* RETURNED: the session is the event loop's again, which closes it there */
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
            else if (e->owner->mode != DEAD && e->owner->mode != RETURNED && e->fd >= 0)
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
    free(c->scratch);
    free(c->slots);
    if (c->epfd >= 0)
        close(c->epfd);
    if (c->wakefd >= 0)
        close(c->wakefd);
    if (c->notifyfd >= 0)
        close(c->notifyfd);
    pthread_mutex_destroy(&c->lock);
    Py_TYPE(c)->tp_free((PyObject *)c);
}


/* A copy of a bytes object's contents (lane tables are owned by the pair). */
static int
copy_bytes(PyObject *o, unsigned char **data, size_t *len)
{
    char *b;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(o, &b, &n) < 0)
        return -1;
    *data = malloc(n ? (size_t)n : 1);
    if (*data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(*data, b, (size_t)n);
    *len = (size_t)n;
    return 0;
}

/* lane = (generation, valid_until, [(key, (segment, ...), (order, ...)), ...], [(parse body, message), ...],
 *         [name, ...]) */
static lane *
lane_from_python(PyObject *spec)
{
    long long generation;
    double valid_until;
    PyObject *templates, *parses, *binds;
    if (!PyArg_ParseTuple(spec, "LdO!O!O!:lane", &generation, &valid_until, &PyList_Type, &templates, &PyList_Type,
                          &parses, &PyList_Type, &binds))
        return NULL;
    lane *l = calloc(1, sizeof(lane));
    if (l == NULL)
        return (lane *)PyErr_NoMemory();
    l->generation = generation;
    l->valid_until = valid_until;
    Py_ssize_t nt = PyList_GET_SIZE(templates), np = PyList_GET_SIZE(parses), nb = PyList_GET_SIZE(binds);
    l->templates = calloc(nt ? (size_t)nt : 1, sizeof(lane_template));
    l->parses = calloc(np ? (size_t)np : 1, sizeof(lane_entry));
    l->binds = calloc(nb ? (size_t)nb : 1, sizeof(lane_entry));
    if (l->templates == NULL || l->parses == NULL || l->binds == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < nt; i++) {
        PyObject *key, *segs, *order;
        lane_template *t = &l->templates[i];
        l->ntemplates++;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(templates, i), "SO!O!:template", &key, &PyTuple_Type, &segs,
                              &PyTuple_Type, &order))
            goto fail;
        Py_ssize_t ns = PyTuple_GET_SIZE(segs);
        if (ns < 1 || PyTuple_GET_SIZE(order) != ns - 1) {
            PyErr_SetString(PyExc_ValueError, "a template has one segment more than slots");
            goto fail;
        }
        if (copy_bytes(key, &t->key, &t->key_len) < 0)
            goto fail;
        t->hash = fnv1a(t->key, t->key_len);
        t->seg = calloc((size_t)ns, sizeof(unsigned char *));
        t->seg_len = calloc((size_t)ns, sizeof(size_t));
        t->order = calloc((size_t)ns, sizeof(size_t));
        if (t->seg == NULL || t->seg_len == NULL || t->order == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        t->nseg = (size_t)ns;
        for (Py_ssize_t k = 0; k < ns; k++) {
            if (copy_bytes(PyTuple_GET_ITEM(segs, k), &t->seg[k], &t->seg_len[k]) < 0)
                goto fail;
            if (k + 1 < ns) {
                Py_ssize_t at = PyLong_AsSsize_t(PyTuple_GET_ITEM(order, k));
                if (at < 0) {
                    if (!PyErr_Occurred())
                        PyErr_SetString(PyExc_ValueError, "a negative slot index");
                    goto fail;
                }
                t->order[k] = (size_t)at;
            }
        }
    }
    for (Py_ssize_t i = 0; i < np; i++) {
        PyObject *body, *message;
        lane_entry *e = &l->parses[i];
        l->nparses++;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(parses, i), "SS:parse", &body, &message) ||
            copy_bytes(body, &e->data, &e->len) < 0 || copy_bytes(message, &e->out, &e->out_len) < 0)
            goto fail;
        e->hash = fnv1a(e->data, e->len);
    }
    for (Py_ssize_t i = 0; i < nb; i++) {
        lane_entry *e = &l->binds[i];
        l->nbinds++;
        if (copy_bytes(PyList_GET_ITEM(binds, i), &e->data, &e->len) < 0)
            goto fail;
        e->hash = fnv1a(e->data, e->len);
    }
    return l;
fail:
    lane_free(l);
    return NULL;
}

PyDoc_STRVAR(Core_add_doc,
"add(id, client_fd, backend_fd, in_flight, status, max_message_size, lane=None) -> Pair\n\n"
"Relay the two connected, non-blocking sockets from now on; the core owns (and closes) both\n"
"descriptors, also when this raises after taking them. ``lane``: a governed session's tables\n"
"(generation, valid_until, templates, parses, binds); the pair returns (EV_RETURNED) at any other\n"
"message, and at any judged one after another generation or after valid_until (time.time()).");

static PyObject *
Core_add(Core *c, PyObject *args)
{
    long long id, limit;
    int cfd, bfd, in_flight, status;
    PyObject *lane_spec = Py_None;
    lane *l = NULL;
    if (!PyArg_ParseTuple(args, "LiiiCL|O:add", &id, &cfd, &bfd, &in_flight, &status, &limit, &lane_spec))
        return NULL;
    if (lane_spec != Py_None && (l = lane_from_python(lane_spec)) == NULL) {
        close(cfd);
        close(bfd);
        return NULL;
    }
    if (!c->running || __atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE)) {
        close(cfd);
        close(bfd);
        lane_free(l);
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
        lane_free(l);
        return PyErr_NoMemory();
    }
    Pair *obj = PyObject_New(Pair, &PairType);
    if (obj == NULL) {
        free(p->streams[0].buf);
        free(p->streams[1].buf);
        free(p);
        close(cfd);
        close(bfd);
        lane_free(l);
        return NULL;
    }
    p->id = id;
    p->limit = limit;
    p->streams[0].cap = p->streams[1].cap = BUF_SIZE;
    p->streams[0].msg_start = p->streams[1].msg_start = SIZE_MAX;
    p->in_flight = in_flight;
    p->status = status;
    p->mode = RELAYING;
    p->lane = l;
    p->lane_pc = -1;
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
        p->refs = 1;  /* the Pair's: freeing it closes both fds */
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


PyDoc_STRVAR(Pair_take_back_doc,
"take_back() -> (client_fd, backend_fd, client_bytes, backend_bytes, in_flight, status, syncs, readies, parse_open)\n\n"
"After EV_RETURNED: the fds (the caller owns them now), the client bytes read and not sent (from the\n"
"message the lane left to Python), a partial backend header read, the statement counts, the Query/Sync\n"
"messages sent and ReadyForQuery messages relayed by the lane, and whether a Parse went out in the\n"
"open sync group (-1: the lane passed nothing).");

static PyObject *
Pair_take_back(Pair *self, PyObject *unused)
{
    pair *p = self->p;
    if (p->mode != RETURNED || p->ends[CLIENT].fd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "the pair was not returned");
        return NULL;
    }
    const stream *up = &p->streams[TO_BACKEND], *down = &p->streams[TO_CLIENT];
    PyObject *out = Py_BuildValue("(iiy#y#iCLLi)", p->ends[CLIENT].fd, p->ends[BACKEND].fd,
                                  (const char *)up->buf + up->fwd, (Py_ssize_t)(up->tail - up->fwd),
                                  (const char *)down->buf + down->fwd, (Py_ssize_t)(down->tail - down->fwd),
                                  p->in_flight, p->status & 0xff, p->lane_syncs, p->lane_readies, p->lane_pc);
    if (out != NULL)
        p->ends[CLIENT].fd = p->ends[BACKEND].fd = -1;
    return out;
}

static PyMethodDef Pair_methods[] = {
    {"close", (PyCFunction)Pair_close, METH_VARARGS, Pair_close_doc},
    {"take_back", (PyCFunction)Pair_take_back, METH_NOARGS, Pair_take_back_doc},
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


static PyObject *
invalidate_lanes(PyObject *module, PyObject *unused)
{
    return PyLong_FromLongLong(__atomic_add_fetch(&lane_generation, 1, __ATOMIC_ACQ_REL));
}

static PyObject *
current_generation(PyObject *module, PyObject *unused)
{
    return PyLong_FromLongLong(__atomic_load_n(&lane_generation, __ATOMIC_ACQUIRE));
}

/* use_parser(path): take libpg_query's splitter from the loaded extension at ``path``; True if found. */
static PyObject *
use_parser(PyObject *module, PyObject *arg)
{
    const char *path = PyUnicode_AsUTF8(arg);
    if (path == NULL)
        return NULL;
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (h == NULL)
        Py_RETURN_FALSE;
    void *split = dlsym(h, "pg_query_split_with_parser"), *release = dlsym(h, "pg_query_free_split_result");
    if (split == NULL || release == NULL)
        Py_RETURN_FALSE;
    *(void **)&split_with_parser = split;
    *(void **)&free_split_result = release;
    Py_RETURN_TRUE;  /* the handle stays open: the functions are used for the life of the process */
}

static PyMethodDef module_methods[] = {
    {"invalidate_lanes", invalidate_lanes, METH_NOARGS, "Every lane built so far passes nothing more; the new generation."},
    {"lane_generation", current_generation, METH_NOARGS, "The generation a lane built now belongs to."},
    {"use_parser", use_parser, METH_O, "use_parser(path of pglast.parser's extension) -> whether Queries can pass lanes."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "proxy._relay", "The C relay thread of pass-through and governed sessions.", -1, module_methods,
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
        PyModule_AddIntConstant(m, "EV_BACKEND_VIOLATION", EV_BACKEND_VIOLATION) < 0 ||
        PyModule_AddIntConstant(m, "EV_RETURNED", EV_RETURNED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
