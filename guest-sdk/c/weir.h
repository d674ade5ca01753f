/*
 * The weir SDK for C: write stream operators as per-record functions, register them by name,
 * and build a component with `weir build --language c -o op.wasm your.c` (clang and wasi-libc
 * from the system; nothing else to compile by hand).
 *
 *     #include "weir.h"
 *
 *     static int upper(weir_ctx *ctx, weir_bytes in, weir_buffer *out) {
 *         for (size_t i = 0; i < in.len; i++)
 *             if (weir_buffer_push_byte(out, toupper(in.data[i]))) return -1;
 *         return 0;
 *     }
 *
 *     WEIR_OPERATORS(
 *         WEIR_MAP("upper", upper)
 *     )
 *
 * A component instance runs one operator (the one the job names when it opens the instance),
 * so an operator's own state can live in static variables. Functions return 0 on success and
 * `weir_fail(ctx, ...)` (which returns -1) on failure: the message fails the subtask and reaches
 * the job's exceptions. Records are bytes; values between operators of different languages are
 * usually UTF-8 text. Both call paths of the host are implemented: a record per call, and a
 * batch of records in the record framing per call (the host uses the batch path).
 */
#ifndef WEIR_H
#define WEIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes owned by someone else, valid for the call they were given in. */
typedef struct {
    const uint8_t *data;
    size_t len;
} weir_bytes;

/* A record: its value, and its key and event time (milliseconds) when it has them. */
typedef struct {
    weir_bytes value;
    bool has_key;
    weir_bytes key;
    bool has_timestamp;
    int64_t timestamp;
} weir_record;

/* A growable byte buffer. Starts zeroed: `weir_buffer b = {0};`. */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} weir_buffer;

/* Makes room for `len` more bytes; -1 if memory ran out. */
int weir__buffer_grow(weir_buffer *buffer, size_t len);

/* Copies `len` bytes. Short copies, the common case per record, move 8 bytes at a time in
 * the caller's code: wasi-libc's memcpy is a call and a loop, and wasm's memory.copy a call into
 * the host. */
static inline void weir__copy(uint8_t *dst, const uint8_t *src, size_t len) {
    if (len > 64) {
        __builtin_memcpy(dst, src, len);
        return;
    }
    for (; len >= 8; len -= 8, dst += 8, src += 8) __builtin_memcpy(dst, src, 8);
    while (len--) *dst++ = *src++;
}

/* Appends bytes; -1 if memory ran out. Inline: operators push a few bytes per record. */
static inline int weir_buffer_push(weir_buffer *buffer, const void *data, size_t len) {
    if (buffer->cap - buffer->len < len && weir__buffer_grow(buffer, len)) return -1;
    weir__copy(buffer->data + buffer->len, (const uint8_t *)data, len);
    buffer->len += len;
    return 0;
}

static inline int weir_buffer_push_byte(weir_buffer *buffer, uint8_t byte) {
    if (buffer->cap == buffer->len && weir__buffer_grow(buffer, 1)) return -1;
    buffer->data[buffer->len++] = byte;
    return 0;
}
void weir_buffer_clear(weir_buffer *buffer);
void weir_buffer_free(weir_buffer *buffer);

/* `text` as bytes (without its NUL). */
weir_bytes weir_text(const char *text);

typedef enum {
    WEIR_EVENT_TIME = 0,
    WEIR_PROCESSING_TIME = 1,
} weir_time_domain;

typedef enum {
    WEIR_TRACE = 0,
    WEIR_DEBUG = 1,
    WEIR_INFO = 2,
    WEIR_WARN = 3,
    WEIR_ERROR = 4,
} weir_level;

/* The call in progress: where emitted records go, the key state and timers are scoped to. */
typedef struct weir_ctx weir_ctx;

/* What the instance was opened as. */
typedef struct {
    const char *name;
    uint32_t subtask_index;
    uint32_t parallelism;
    uint32_t max_parallelism;
    uint32_t attempt;
} weir_info;

const weir_info *weir_operator_info(void);
/* The value of configuration entry `key` of the job's operator, or NULL. */
const char *weir_config(const char *key);

/* Emits `value` without a key, with the event time of the record being processed. */
int weir_emit(weir_ctx *ctx, weir_bytes value);
/* Emits `value` with `key` (for a following hash edge or keyed operator). */
int weir_emit_keyed(weir_ctx *ctx, weir_bytes value, weir_bytes key);
/* Emits a whole record as it is. */
int weir_emit_record(weir_ctx *ctx, const weir_record *record);

/* The key of the record or timer being processed (empty without one). */
bool weir_has_key(const weir_ctx *ctx);
weir_bytes weir_key(const weir_ctx *ctx);

/* Keyed value state, owned and checkpointed by the host, scoped to the current key. Declare
 * states in `open`; the name identifies the state in checkpoints. */
typedef uint32_t weir_state;
weir_state weir_value_state(const char *name);
/* The current key's value: true and `*value` set (valid until the next state call of this
 * operator), or false. */
bool weir_value_get(weir_ctx *ctx, weir_state state, weir_bytes *value);
void weir_value_set(weir_ctx *ctx, weir_state state, weir_bytes value);
void weir_value_clear(weir_ctx *ctx, weir_state state);

/* Timers of the current key: `on_timer` is called once the clock of `domain` reaches
 * `timestamp` (milliseconds). */
void weir_timer_register(weir_ctx *ctx, weir_time_domain domain, int64_t timestamp);
void weir_timer_delete(weir_ctx *ctx, weir_time_domain domain, int64_t timestamp);
int64_t weir_current_watermark(void);
int64_t weir_processing_time(void);

/* Fails the call with a printf-style message; returns -1 for `return weir_fail(...)`. */
int weir_fail(weir_ctx *ctx, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Fails the call because the operator's configuration cannot be used. */
int weir_config_error(weir_ctx *ctx, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* Writes to the task's log. */
void weir_log(weir_level level, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Aborts the instance with a message the host reports (C's panic). */
_Noreturn void weir_panic(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* An operator: a name and the callbacks it implements (NULL for those it does not need). */
typedef struct weir_operator {
    const char *name;
    int (*open)(weir_ctx *ctx);
    int (*process)(weir_ctx *ctx, const weir_record *record);
    /* Records of the second input of a two-input operator. */
    int (*process_second)(weir_ctx *ctx, const weir_record *record);
    int (*on_timer)(weir_ctx *ctx, weir_time_domain domain, int64_t timestamp);
    int (*on_watermark)(weir_ctx *ctx, int64_t watermark);
    int (*close)(weir_ctx *ctx);
    /* The operator's own state (not keyed state, which the host keeps) for a checkpoint. */
    int (*snapshot)(weir_ctx *ctx, weir_buffer *state);
    int (*restore)(weir_ctx *ctx, weir_bytes state);
    /* Records without a key are refused (keyed state and timers need one). */
    bool keyed;
    /* The user function of the adapters below. */
    void (*function)(void);
} weir_operator;

/* The operators this component exports, by name: `WEIR_OPERATORS(WEIR_MAP("a", f), ...)`, the
 * entries separated by commas, none after the last. Besides the table it defines the batched
 * loop of each map among the first WEIR__INLINED_MAPS entries, with the map's function
 * inlined into it (see weir__map_run below). */
#define WEIR_OPERATORS(...) \
    const weir_operator weir_operators[] = {__VA_ARGS__, {0}}; \
    WEIR__MAP_RUNS

/* Each record's value becomes `out`'s bytes; the key is dropped, the event time kept. */
typedef int (*weir_map_fn)(weir_ctx *ctx, weir_bytes value, weir_buffer *out);
/* Records whose value passes go on as they are. */
typedef bool (*weir_filter_fn)(weir_bytes value);
/* Any number of records per record, through `weir_emit`. */
typedef int (*weir_flat_map_fn)(weir_ctx *ctx, weir_bytes value);
/* Each record goes on with the key the function writes into `key`. */
typedef int (*weir_key_by_fn)(weir_ctx *ctx, weir_bytes value, weir_buffer *key);

int weir__map(weir_ctx *ctx, const weir_record *record);
int weir__filter(weir_ctx *ctx, const weir_record *record);
int weir__flat_map(weir_ctx *ctx, const weir_record *record);
int weir__key_by(weir_ctx *ctx, const weir_record *record);

#define WEIR_MAP(NAME, FN) \
    {.name = (NAME), .process = weir__map, .function = (void (*)(void))(weir_map_fn)(FN)}
#define WEIR_FILTER(NAME, FN) \
    {.name = (NAME), .process = weir__filter, .function = (void (*)(void))(weir_filter_fn)(FN)}
#define WEIR_FLAT_MAP(NAME, FN) \
    {.name = (NAME), \
     .process = weir__flat_map, \
     .function = (void (*)(void))(weir_flat_map_fn)(FN)}
#define WEIR_KEY_BY(NAME, FN) \
    {.name = (NAME), .process = weir__key_by, .function = (void (*)(void))(weir_key_by_fn)(FN)}
/* A keyed process function: `WEIR_KEYED_PROCESS("count", .open = f, .process = g)`. */
#define WEIR_KEYED_PROCESS(NAME, ...) {.name = (NAME), .keyed = true, __VA_ARGS__}
/* Any operator: `WEIR_PROCESS("x", .process = f, .close = g)`. */
#define WEIR_PROCESS(NAME, ...) {.name = (NAME), __VA_ARGS__}

/* ---- internal: the batched loop of a map ----
 *
 * A map over a block of bare values (no key, no time) is the hot loop of most jobs. Called
 * through `weir_operator.function`, the author's function costs an indirect call per record
 * and keeps everything around it in memory; so WEIR_OPERATORS instantiates this loop once per
 * map of the table, where the function is a constant the compiler inlines (the table is a
 * `const` array, so `weir_operators[i].function` folds to the function itself). */

/* One run over input values of one width, each output written by the function straight into
 * the open block at `out[out_len..out_limit)` (its `weir_buffer` is a window there) and kept
 * while it has the block's width `out_width`. It stops at the end of the input, when the
 * function fails (`failed`), or with an output that does not join the block (`pending`: the
 * output is `spill`, the record counted as consumed). A window the function outgrows is moved
 * to memory of its own by weir__buffer_grow, so the batch is never reallocated under it. */
typedef struct {
    const uint8_t *in;
    size_t width;
    size_t left;
    uint8_t *out;
    size_t out_len;
    size_t out_limit;
    size_t out_width;
    weir_buffer spill;
    bool failed;
    bool pending;
} weir__map_run;

static inline __attribute__((always_inline)) void weir__map_values(weir__map_run *run,
                                                                   weir_map_fn map,
                                                                   weir_ctx *ctx) {
    const uint8_t *in = run->in;
    size_t left = run->left;
    const size_t width = run->width;
    uint8_t *out = run->out;
    size_t len = run->out_len;
    const size_t limit = run->out_limit;
    const size_t out_width = run->out_width;
    while (left > 0) {
        weir_buffer window = {out + len, 0, limit - len};
        weir_bytes value = {in, width};
        if (map(ctx, value, &window)) {
            run->spill = window;
            run->failed = true;
            break;
        }
        in += width;
        left--;
        if (window.data != out + len || window.len != out_width || out_width == 0) {
            run->spill = window;
            run->pending = true;
            break;
        }
        len += out_width;
    }
    run->in = in;
    run->left = left;
    run->out_len = len;
}

/* Runs the map at `index` of the table over `run`: false if it is past the first
 * WEIR__INLINED_MAPS entries (the SDK then calls it through its pointer). */
bool weir__map_run_at(size_t index, weir__map_run *run, weir_ctx *ctx);

#define WEIR__INLINED_MAPS 16
#define WEIR__COUNT (sizeof(weir_operators) / sizeof(weir_operators[0]) - 1)
#define WEIR__MAP_CASE(I) \
    case I: \
        if ((I) < WEIR__COUNT && weir_operators[(I) < WEIR__COUNT ? (I) : 0].process == weir__map) { \
            weir__map_values(run, (weir_map_fn)weir_operators[(I) < WEIR__COUNT ? (I) : 0].function, \
                             ctx); \
            return true; \
        } \
        return false;
#define WEIR__MAP_RUNS \
    bool weir__map_run_at(size_t index, weir__map_run *run, weir_ctx *ctx) { \
        switch (index) { \
            WEIR__MAP_CASE(0) WEIR__MAP_CASE(1) WEIR__MAP_CASE(2) WEIR__MAP_CASE(3) \
            WEIR__MAP_CASE(4) WEIR__MAP_CASE(5) WEIR__MAP_CASE(6) WEIR__MAP_CASE(7) \
            WEIR__MAP_CASE(8) WEIR__MAP_CASE(9) WEIR__MAP_CASE(10) WEIR__MAP_CASE(11) \
            WEIR__MAP_CASE(12) WEIR__MAP_CASE(13) WEIR__MAP_CASE(14) WEIR__MAP_CASE(15) \
            default: return false; \
        } \
    }

/* A component that is a whole job defines its plan: the job manifest (TOML) whose operators
 * are this component's, with `${name}` placeholders for `--arg name=...`:
 *
 *     const char *weir_job_plan(void) { return "name = \"wc\"\n[[source]]\n..."; }
 */
const char *weir_job_plan(void);

#ifdef __cplusplus
}
#endif

#endif
