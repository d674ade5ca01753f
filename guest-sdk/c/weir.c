/*
 * The weir SDK for C: the component's exports (the `job` world of wit/weir.wit, through the
 * bindings wit-bindgen generated into bindings/), dispatch to the operator named in `open`,
 * and the record framing of docs/record-framing.md for the batched path.
 *
 * Ownership follows the canonical ABI as wit-bindgen's C bindings do: arguments of an export
 * belong to it and are freed here; what an export returns is malloc'd here and freed by the
 * generated post-return function; what an import returns belongs to the caller.
 */
#include "weir.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bindings/job.h"
#include "state_cache.h"

extern const weir_operator weir_operators[];
__attribute__((weak)) const char *weir_job_plan(void);

enum { FLAG_TIMESTAMP = 1, FLAG_KEY = 2, FLAG_BLOCK = 4 };

typedef enum {
    ERROR_FAILED,
    ERROR_CONFIG,
    ERROR_DECODE,
} error_kind;

struct weir_ctx {
    bool has_key;
    weir_bytes key;
    bool has_timestamp;
    int64_t timestamp;
    /* The batch being written (batched calls), or NULL: records go out through `emit`. */
    weir_buffer *batch;
    char *error;
    error_kind error_kind;
};

/* The instance: the operator it was opened as, its configuration, its output buffer. */
static const weir_operator *operator_ = NULL;
static weir_info info;
static char **config_keys = NULL;
static char **config_values = NULL;
static size_t config_len = 0;
static weir_buffer batch_out;
static weir_buffer scratch;

/* ---- buffers ---- */

/* Whether `data` points into the batch being written: a map's output window (weir__map_run). */
static bool in_batch_out(const uint8_t *data) {
    uintptr_t at = (uintptr_t)data, start = (uintptr_t)batch_out.data;
    return batch_out.data && at >= start && at < start + batch_out.cap;
}

int weir__buffer_grow(weir_buffer *b, size_t len) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < len) {
        if (cap > SIZE_MAX / 2) return -1;
        cap *= 2;
    }
    if (b != &batch_out && in_batch_out(b->data)) {
        /* A window into the batch moves out to memory of its own. */
        uint8_t *own = malloc(cap);
        if (!own) return -1;
        if (b->len) memcpy(own, b->data, b->len);
        b->data = own;
        b->cap = cap;
        return 0;
    }
    uint8_t *grown = realloc(b->data, cap);
    if (!grown) return -1;
    b->data = grown;
    b->cap = cap;
    return 0;
}

void weir_buffer_clear(weir_buffer *b) { b->len = 0; }

void weir_buffer_free(weir_buffer *b) {
    /* A map's `out` may be a window into the batch (weir__map_run): not ours to free. */
    if (b == &batch_out || !in_batch_out(b->data)) free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

weir_bytes weir_text(const char *text) {
    weir_bytes bytes = {(const uint8_t *)text, strlen(text)};
    return bytes;
}

/* ---- messages ---- */

static char *vformat(const char *format, va_list args) {
    va_list again;
    va_copy(again, args);
    int n = vsnprintf(NULL, 0, format, args);
    char *text = malloc(n > 0 ? (size_t)n + 1 : 1);
    if (text) {
        vsnprintf(text, n > 0 ? (size_t)n + 1 : 1, format, again);
    }
    va_end(again);
    return text;
}

static int fail_with(weir_ctx *ctx, error_kind kind, const char *format, va_list args) {
    free(ctx->error);
    ctx->error = vformat(format, args);
    ctx->error_kind = kind;
    return -1;
}

int weir_fail(weir_ctx *ctx, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int r = fail_with(ctx, ERROR_FAILED, format, args);
    va_end(args);
    return r;
}

int weir_config_error(weir_ctx *ctx, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int r = fail_with(ctx, ERROR_CONFIG, format, args);
    va_end(args);
    return r;
}

void weir_log(weir_level level, const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *text = vformat(format, args);
    va_end(args);
    if (!text) return;
    job_string_t message = {(uint8_t *)text, strlen(text)};
    weir_stream_logging_log((weir_stream_logging_level_t)level, &message);
    free(text);
}

_Noreturn void weir_panic(const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *text = vformat(format, args);
    va_end(args);
    const char *said = text ? text : "weir_panic (and out of memory for its message)";
    job_string_t message = {(uint8_t *)said, strlen(said)};
    weir_stream_logging_report_panic(&message);
    abort();
}

static void out_of_memory(void) { weir_panic("out of memory"); }

void weir__panic_oom(void) { out_of_memory(); }

/* ---- the record framing ---- */

static void put_u32(uint8_t *at, uint32_t v) {
    at[0] = (uint8_t)v;
    at[1] = (uint8_t)(v >> 8);
    at[2] = (uint8_t)(v >> 16);
    at[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *at) {
    return (uint32_t)at[0] | (uint32_t)at[1] << 8 | (uint32_t)at[2] << 16 |
           (uint32_t)at[3] << 24;
}

static int64_t get_i64(const uint8_t *at) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | at[i];
    return (int64_t)v;
}

/* The block at the end of `batch_out`, which a record of its shape may join. */
static struct {
    bool open;
    size_t start;
    uint8_t flags;
    size_t key_len;
    size_t value_len;
    uint32_t body;
} block;

enum { BLOCK_MAX_FIELD = 32, BLOCK_MAX_BYTES = 4096 };

/* Appends `r` to the block at the end of `b`, or starts one: records of one shape in a row
 * share a block, framed once (what the Rust SDK's BatchWriter does), so the host checks and
 * counts a block rather than each record. */
static int write_blocked(weir_buffer *b, const weir_record *r) {
    uint8_t flags = (uint8_t)((r->has_timestamp ? FLAG_TIMESTAMP : 0) | (r->has_key ? FLAG_KEY : 0));
    size_t key_len = r->has_key ? r->key.len : 0;
    size_t entry = (r->has_timestamp ? 8 : 0) + key_len + r->value.len;
    bool joins = block.open && block.flags == flags && block.key_len == key_len &&
                 block.value_len == r->value.len && b->len - block.start < BLOCK_MAX_BYTES;
    if (!joins) {
        uint8_t head[4 + 1 + 4 + 4];
        size_t n = 4;
        head[n++] = flags | FLAG_BLOCK;
        if (r->has_key) {
            put_u32(head + n, (uint32_t)key_len);
            n += 4;
        }
        put_u32(head + n, (uint32_t)r->value.len);
        n += 4;
        put_u32(head, (uint32_t)(n - 4));
        block.body = (uint32_t)(n - 4);
        block.open = true;
        block.start = b->len;
        block.flags = flags;
        block.key_len = key_len;
        block.value_len = r->value.len;
        if (weir_buffer_push(b, head, n)) return -1;
    }
    if (r->has_timestamp) {
        uint8_t ts[8];
        uint64_t t = (uint64_t)r->timestamp;
        for (int i = 0; i < 8; i++) ts[i] = (uint8_t)(t >> (8 * i));
        if (weir_buffer_push(b, ts, 8)) return -1;
    }
    if (r->has_key && weir_buffer_push(b, r->key.data, key_len)) return -1;
    if (weir_buffer_push(b, r->value.data, r->value.len)) return -1;
    block.body += (uint32_t)entry;
    /* wasm is little-endian: the length field is the u32 as it lies in memory. */
    __builtin_memcpy(b->data + block.start, &block.body, 4);
    return 0;
}

enum { FLUSH_BYTES = 256 << 10 };

/* Hands what a batched call produced so far to the host (`output.emit-batch`) once it passes
 * FLUSH_BYTES, so an operator's fan-out is bounded by the network's buffers, not by the guest's
 * memory or the host's limit on one call's output (the Rust SDK does the same). */
static void flush_if_full(void) {
    if (batch_out.len < FLUSH_BYTES) return;
    job_list_u8_t records = {batch_out.data, batch_out.len};
    weir_stream_output_emit_batch(&records);
    batch_out.len = 0;
    block.open = false;
}

/* Appends one record (not a block) to `b`. */
static int write_record(weir_buffer *b, const weir_record *r) {
    if (b == &batch_out && r->value.len >= 1 && r->value.len <= BLOCK_MAX_FIELD &&
        (!r->has_key || r->key.len <= BLOCK_MAX_FIELD)) {
        return write_blocked(b, r);
    }
    if (b == &batch_out) block.open = false;
    size_t body = 1 + (r->has_timestamp ? 8 : 0) + (r->has_key ? 4 + r->key.len : 0) + r->value.len;
    if (body > UINT32_MAX) return -1;
    uint8_t head[1 + 4 + 8 + 4];
    size_t n = 0;
    put_u32(head, (uint32_t)body);
    n = 4;
    head[n++] = (uint8_t)((r->has_timestamp ? FLAG_TIMESTAMP : 0) | (r->has_key ? FLAG_KEY : 0));
    if (r->has_timestamp) {
        uint64_t t = (uint64_t)r->timestamp;
        for (int i = 0; i < 8; i++) head[n++] = (uint8_t)(t >> (8 * i));
    }
    if (r->has_key) {
        put_u32(head + n, (uint32_t)r->key.len);
        n += 4;
    }
    if (weir_buffer_push(b, head, n)) return -1;
    if (r->has_key && weir_buffer_push(b, r->key.data, r->key.len)) return -1;
    return weir_buffer_push(b, r->value.data, r->value.len);
}

/* Reads records and blocks' entries in order. */
typedef struct {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    /* The block being read: its entries left, their shape. */
    const uint8_t *entries;
    size_t entries_left;
    uint8_t block_flags;
    uint32_t block_key_len;
    uint32_t block_value_len;
} reader;

/* 1 and `*r` set for the next record, 0 at the end, -1 (and `*error`) for bad framing. */
static int next_record(reader *rd, weir_record *r, const char **error) {
    if (rd->entries_left > 0) {
        const uint8_t *at = rd->entries;
        r->has_timestamp = rd->block_flags & FLAG_TIMESTAMP;
        if (r->has_timestamp) {
            r->timestamp = get_i64(at);
            at += 8;
        }
        r->has_key = rd->block_flags & FLAG_KEY;
        r->key.data = at;
        r->key.len = r->has_key ? rd->block_key_len : 0;
        at += r->key.len;
        r->value.data = at;
        r->value.len = rd->block_value_len;
        at += rd->block_value_len;
        rd->entries = at;
        rd->entries_left--;
        return 1;
    }
    for (;;) {
        if (rd->pos == rd->len) return 0;
        if (rd->len - rd->pos < 5) {
            *error = "a record header runs past the batch";
            return -1;
        }
        const uint8_t *at = rd->buf + rd->pos;
        uint32_t body = get_u32(at);
        if (body < 1 || body > rd->len - rd->pos - 4) {
            *error = "a record's length runs past the batch";
            return -1;
        }
        uint8_t flags = at[4];
        const uint8_t *p = at + 5;
        const uint8_t *end = at + 4 + body;
        rd->pos += 4 + (size_t)body;
        if (flags & ~(FLAG_TIMESTAMP | FLAG_KEY | FLAG_BLOCK)) {
            *error = "a record sets an unknown flag";
            return -1;
        }
        if (flags & FLAG_BLOCK) {
            uint32_t key_len = 0;
            if (flags & FLAG_KEY) {
                if (end - p < 4) goto short_body;
                key_len = get_u32(p);
                p += 4;
            }
            if (end - p < 4) goto short_body;
            uint32_t value_len = get_u32(p);
            p += 4;
            /* In 64 bits: two 32-bit widths could overflow wasm32's size_t. */
            uint64_t entry64 = (flags & FLAG_TIMESTAMP ? 8 : 0) + (uint64_t)key_len + value_len;
            size_t bytes = (size_t)(end - p);
            if (entry64 == 0 || (uint64_t)bytes % entry64 != 0) {
                *error = "a block's entries do not fill it";
                return -1;
            }
            if (bytes == 0) continue;
            size_t entry = (size_t)entry64; /* at most `bytes` now */
            rd->entries = p;
            rd->entries_left = bytes / entry;
            rd->block_flags = flags;
            rd->block_key_len = key_len;
            rd->block_value_len = value_len;
            return next_record(rd, r, error);
        }
        r->has_timestamp = flags & FLAG_TIMESTAMP;
        if (r->has_timestamp) {
            if (end - p < 8) goto short_body;
            r->timestamp = get_i64(p);
            p += 8;
        }
        r->has_key = flags & FLAG_KEY;
        r->key.len = 0;
        r->key.data = p;
        if (r->has_key) {
            if (end - p < 4) goto short_body;
            uint32_t key_len = get_u32(p);
            p += 4;
            if ((size_t)(end - p) < key_len) goto short_body;
            r->key.data = p;
            r->key.len = key_len;
            p += key_len;
        }
        r->value.data = p;
        r->value.len = (size_t)(end - p);
        return 1;
    }
short_body:
    *error = "a record's flags announce more than its body holds";
    return -1;
}

/* ---- the context ---- */

int weir_emit_record(weir_ctx *ctx, const weir_record *r) {
    if (ctx->batch) {
        if (write_record(ctx->batch, r)) out_of_memory();
        if (ctx->batch == &batch_out) flush_if_full();
        return 0;
    }
    job_list_u8_t value = {(uint8_t *)r->value.data, r->value.len};
    job_list_u8_t key = {(uint8_t *)r->key.data, r->key.len};
    int64_t timestamp = r->timestamp;
    weir_stream_output_emit(&value, r->has_key ? &key : NULL, r->has_timestamp ? &timestamp : NULL);
    return 0;
}

int weir_emit(weir_ctx *ctx, weir_bytes value) {
    weir_record r = {value, false, {0}, ctx->has_timestamp, ctx->timestamp};
    return weir_emit_record(ctx, &r);
}

int weir_emit_keyed(weir_ctx *ctx, weir_bytes value, weir_bytes key) {
    weir_record r = {value, true, key, ctx->has_timestamp, ctx->timestamp};
    return weir_emit_record(ctx, &r);
}

bool weir_has_key(const weir_ctx *ctx) { return ctx->has_key; }

weir_bytes weir_key(const weir_ctx *ctx) { return ctx->key; }

const weir_info *weir_operator_info(void) { return &info; }

const char *weir_config(const char *key) {
    for (size_t i = 0; i < config_len; i++) {
        if (strcmp(config_keys[i], key) == 0) return config_values[i];
    }
    return NULL;
}

weir_state weir_value_state(const char *name) {
    job_string_t n = {(uint8_t *)name, strlen(name)};
    return weir_stream_keyed_state_declare(&n, WEIR_STREAM_KEYED_STATE_STATE_KIND_VALUE);
}

static job_list_u8_t key_of(weir_ctx *ctx) {
    job_list_u8_t key = {(uint8_t *)ctx->key.data, ctx->key.len};
    return key;
}

bool weir_value_get(weir_ctx *ctx, weir_state state, weir_bytes *value) {
    return weir__state_get(state, ctx->key.data, ctx->key.len, &value->data, &value->len);
}

void weir_value_set(weir_ctx *ctx, weir_state state, weir_bytes value) {
    weir__state_set(state, ctx->key.data, ctx->key.len, value.data, value.len);
}

void weir_value_clear(weir_ctx *ctx, weir_state state) {
    weir__state_clear(state, ctx->key.data, ctx->key.len);
}

void weir_timer_register(weir_ctx *ctx, weir_time_domain domain, int64_t timestamp) {
    job_list_u8_t key = key_of(ctx);
    weir_stream_timers_register((weir_stream_timers_time_domain_t)domain, &key, timestamp);
}

void weir_timer_delete(weir_ctx *ctx, weir_time_domain domain, int64_t timestamp) {
    job_list_u8_t key = key_of(ctx);
    weir_stream_timers_delete((weir_stream_timers_time_domain_t)domain, &key, timestamp);
}

int64_t weir_current_watermark(void) { return weir_stream_timers_current_watermark(); }

int64_t weir_processing_time(void) { return weir_stream_timers_current_processing_time(); }

/* ---- the adapters of WEIR_MAP and friends ---- */

int weir__map(weir_ctx *ctx, const weir_record *record) {
    weir_buffer_clear(&scratch);
    if (((weir_map_fn)operator_->function)(ctx, record->value, &scratch)) return -1;
    weir_bytes out = {scratch.data, scratch.len};
    return weir_emit(ctx, out);
}

int weir__filter(weir_ctx *ctx, const weir_record *record) {
    if (((weir_filter_fn)operator_->function)(record->value)) return weir_emit_record(ctx, record);
    return 0;
}

int weir__flat_map(weir_ctx *ctx, const weir_record *record) {
    return ((weir_flat_map_fn)operator_->function)(ctx, record->value);
}

int weir__key_by(weir_ctx *ctx, const weir_record *record) {
    weir_buffer_clear(&scratch);
    if (((weir_key_by_fn)operator_->function)(ctx, record->value, &scratch)) return -1;
    weir_bytes key = {scratch.data, scratch.len};
    return weir_emit_keyed(ctx, record->value, key);
}

/* ---- the exports ---- */

typedef weir_stream_types_operator_error_t wit_error;

static void set_string(job_string_t *s, const char *text) {
    job_string_dup(s, text ? text : "");
}

/* The WIT error of a failed call; `index` is the record's in its batch. */
static void to_wit(weir_ctx *ctx, uint32_t index, wit_error *err) {
    const char *message = ctx->error ? ctx->error : "the operator failed without a message";
    switch (ctx->error_kind) {
        case ERROR_CONFIG:
            err->tag = WEIR_STREAM_TYPES_OPERATOR_ERROR_CONFIG;
            set_string(&err->val.config, message);
            break;
        case ERROR_DECODE:
            err->tag = WEIR_STREAM_TYPES_OPERATOR_ERROR_DECODE;
            err->val.decode.record_index = index;
            set_string(&err->val.decode.message, message);
            break;
        default:
            err->tag = WEIR_STREAM_TYPES_OPERATOR_ERROR_FAILED;
            set_string(&err->val.failed, message);
    }
    free(ctx->error);
    ctx->error = NULL;
}

static bool not_open(wit_error *err) {
    err->tag = WEIR_STREAM_TYPES_OPERATOR_ERROR_FAILED;
    set_string(&err->val.failed, "operator called before a successful open");
    return false;
}

static char *dup_n(const uint8_t *data, size_t len) {
    char *s = malloc(len + 1);
    if (!s) out_of_memory();
    memcpy(s, data, len);
    s[len] = 0;
    return s;
}

bool exports_weir_stream_operator_open(exports_weir_stream_operator_context_t *context,
                                       wit_error *err) {
    char *name = dup_n(context->operator_name.ptr, context->operator_name.len);
    const weir_operator *found = NULL;
    for (const weir_operator *op = weir_operators; op->name; op++) {
        if (strcmp(op->name, name) == 0) found = op;
    }
    if (!found) {
        weir_buffer names = {0};
        for (const weir_operator *op = weir_operators; op->name; op++) {
            if (names.len) weir_buffer_push(&names, ", ", 2);
            weir_buffer_push(&names, op->name, strlen(op->name));
        }
        weir_buffer_push_byte(&names, 0);
        err->tag = WEIR_STREAM_TYPES_OPERATOR_ERROR_UNKNOWN_OPERATOR;
        set_string(&err->val.unknown_operator, names.data ? (const char *)names.data : "");
        weir_buffer_free(&names);
        free(name);
        weir_stream_types_context_free(context);
        return false;
    }
    info.name = name;
    info.subtask_index = context->subtask_index;
    info.parallelism = context->parallelism;
    info.max_parallelism = context->max_parallelism;
    info.attempt = context->attempt;
    config_len = context->config.len;
    config_keys = calloc(config_len ? config_len : 1, sizeof(char *));
    config_values = calloc(config_len ? config_len : 1, sizeof(char *));
    if (!config_keys || !config_values) out_of_memory();
    for (size_t i = 0; i < config_len; i++) {
        job_tuple2_string_string_t *entry = &context->config.ptr[i];
        config_keys[i] = dup_n(entry->f0.ptr, entry->f0.len);
        config_values[i] = dup_n(entry->f1.ptr, entry->f1.len);
    }
    weir_stream_types_context_free(context);
    operator_ = found;
    weir_ctx ctx = {0};
    if (found->open && found->open(&ctx)) {
        operator_ = NULL;
        to_wit(&ctx, 0, err);
        return false;
    }
    return true;
}

/* Runs one record through `f` (process or process_second) with emits through `batch`. */
static int run_record(int (*f)(weir_ctx *, const weir_record *), const weir_record *r,
                      weir_buffer *batch, weir_ctx *ctx) {
    ctx->has_key = r->has_key;
    ctx->key = r->key;
    ctx->has_timestamp = r->has_timestamp;
    ctx->timestamp = r->timestamp;
    ctx->batch = batch;
    if (operator_->keyed && !r->has_key) {
        return weir_fail(ctx, "operator `%s` is keyed, but a record without a key reached it "
                              "(is the edge into it `hash`?)",
                         operator_->name);
    }
    if (!f) return weir_fail(ctx, "operator `%s` takes no such input", operator_->name);
    return f(ctx, r);
}

static bool element(int (*f)(weir_ctx *, const weir_record *), job_list_u8_t *value,
                    job_list_u8_t *maybe_key, int64_t *maybe_timestamp, wit_error *err) {
    weir__state_cache_trim();
    weir_record r = {{value->ptr, value->len}, maybe_key != NULL,
                     {maybe_key ? maybe_key->ptr : NULL, maybe_key ? maybe_key->len : 0},
                     maybe_timestamp != NULL, maybe_timestamp ? *maybe_timestamp : 0};
    weir_ctx ctx = {0};
    int failed = run_record(f, &r, NULL, &ctx);
    job_list_u8_free(value);
    if (maybe_key) job_list_u8_free(maybe_key);
    if (failed) {
        to_wit(&ctx, 0, err);
        return false;
    }
    return true;
}

bool exports_weir_stream_operator_process_element(job_list_u8_t *value, job_list_u8_t *maybe_key,
                                                  int64_t *maybe_timestamp, wit_error *err) {
    if (!operator_) {
        job_list_u8_free(value);
        if (maybe_key) job_list_u8_free(maybe_key);
        return not_open(err);
    }
    return element(operator_->process, value, maybe_key, maybe_timestamp, err);
}

bool exports_weir_stream_two_input_process_element_second(job_list_u8_t *value,
                                                          job_list_u8_t *maybe_key,
                                                          int64_t *maybe_timestamp,
                                                          wit_error *err) {
    if (!operator_) return not_open(err);
    return element(operator_->process_second, value, maybe_key, maybe_timestamp, err);
}

/* The rest of a block of bare values through the map: runs of its inlined loop into the open
 * output block, each output that does not join it written as the general path does. -1 if the
 * map failed (`*index` is the failing record's). */
static int map_block(reader *rd, weir_ctx *ctx, uint32_t *index) {
    size_t at = (size_t)(operator_ - weir_operators);
    weir__map_run run = {0};
    run.width = rd->block_value_len;
    while (rd->entries_left > 0) {
        if (batch_out.cap - batch_out.len < BLOCK_MAX_BYTES &&
            weir__buffer_grow(&batch_out, BLOCK_MAX_BYTES)) {
            out_of_memory();
        }
        bool open = block.open && block.flags == 0 && batch_out.len - block.start < BLOCK_MAX_BYTES;
        run.in = rd->entries;
        run.left = rd->entries_left;
        run.out = batch_out.data;
        run.out_len = batch_out.len;
        run.out_width = open ? block.value_len : 0;
        /* Without an open block the first output is pending anyway (it opens one, or goes as
         * a record): it gets the batch's free room rather than memory of its own. */
        size_t block_end = open ? block.start + BLOCK_MAX_BYTES - 1 + block.value_len : SIZE_MAX;
        run.out_limit = block_end < batch_out.cap ? block_end : batch_out.cap;
        run.failed = run.pending = false;
        if (!weir__map_run_at(at, &run, ctx)) {
            weir__map_values(&run, (weir_map_fn)operator_->function, ctx);
        }
        size_t done = rd->entries_left - run.left;
        rd->entries = run.in;
        rd->entries_left = run.left;
        size_t written = run.out_len - batch_out.len;
        if (written > 0) {
            batch_out.len = run.out_len;
            block.body += (uint32_t)written;
            __builtin_memcpy(batch_out.data + block.start, &block.body, 4);
        }
        /* A failing record is not consumed: `done` stops before it. */
        *index += (uint32_t)done;
        bool spilled_to_own = (run.failed || run.pending) && !in_batch_out(run.spill.data);
        if (run.failed) {
            if (spilled_to_own) free(run.spill.data);
            return -1;
        }
        if (run.pending) {
            /* An output still in the window lies where the next header goes: out first. */
            weir_bytes value = {run.spill.data, run.spill.len};
            if (!spilled_to_own) {
                scratch.len = 0;
                if (weir_buffer_push(&scratch, run.spill.data, run.spill.len)) out_of_memory();
                value.data = scratch.data;
            }
            weir_record out = {value, false, {0}, false, 0};
            if (write_record(&batch_out, &out)) out_of_memory();
            if (spilled_to_own) free(run.spill.data);
        }
        flush_if_full();
    }
    return 0;
}

/* A batched call: every record of `records` through `f`, what they emit framed into `ret`. */
static bool batch(int (*f)(weir_ctx *, const weir_record *), job_list_u8_t *records,
                  job_list_u8_t *ret, wit_error *err) {
    weir__state_cache_trim();
    reader rd = {records->ptr, records->len, 0, NULL, 0, 0, 0, 0};
    weir_buffer_clear(&batch_out);
    /* Output mostly matches input in size: one allocation up front instead of doubling from
     * nothing in every call (the buffer goes to the host at the end of each). */
    if (batch_out.cap < records->len + 64 && records->len < FLUSH_BYTES &&
        weir__buffer_grow(&batch_out, records->len + 64)) {
        out_of_memory();
    }
    block.open = false;
    weir_ctx ctx = {0};
    weir_record r;
    const char *bad = NULL;
    uint32_t index = 0;
    int more;
    if (f == weir__map) {
        /* A map's loop without the general path's layers: the function, then its output
         * straight into the batch (in blocks when the outputs are of one width). */
        weir_map_fn map = (weir_map_fn)operator_->function;
        /* A map returns its value in `out`; anything it emits besides goes to the host at once,
         * never into the batch its values are being written to. */
        ctx.batch = NULL;
        for (;;) {
            /* The entries of a block of bare values: straight from the input to the output
             * block, with no record built for either, in runs of the loop WEIR_OPERATORS
             * compiled for this map. */
            if (rd.entries_left > 0 && (rd.block_flags & (FLAG_TIMESTAMP | FLAG_KEY)) == 0) {
                ctx.has_timestamp = false;
                if (map_block(&rd, &ctx, &index)) {
                    job_list_u8_free(records);
                    to_wit(&ctx, index, err);
                    return false;
                }
                continue;
            }
            more = next_record(&rd, &r, &bad);
            if (more != 1) break;
            ctx.has_timestamp = r.has_timestamp;
            ctx.timestamp = r.timestamp;
            scratch.len = 0;
            if (map(&ctx, r.value, &scratch)) {
                job_list_u8_free(records);
                to_wit(&ctx, index, err);
                return false;
            }
            weir_record out = {{scratch.data, scratch.len}, false, {0}, r.has_timestamp, r.timestamp};
            if (write_record(&batch_out, &out)) out_of_memory();
            flush_if_full();
            index++;
        }
    } else {
        while ((more = next_record(&rd, &r, &bad)) == 1) {
            if (run_record(f, &r, &batch_out, &ctx)) {
                job_list_u8_free(records);
                to_wit(&ctx, index, err);
                return false;
            }
            index++;
        }
    }
    job_list_u8_free(records);
    if (more < 0) {
        weir_fail(&ctx, "the host sent a malformed batch: %s", bad);
        ctx.error_kind = ERROR_DECODE;
        to_wit(&ctx, index, err);
        return false;
    }
    /* The buffer goes to the host (freed by the post-return function); the next call grows a
     * new one. */
    ret->ptr = batch_out.data;
    ret->len = batch_out.len;
    batch_out.data = NULL;
    batch_out.len = batch_out.cap = 0;
    return true;
}

bool exports_weir_stream_batch_process_batch(job_list_u8_t *records, job_list_u8_t *ret,
                                             wit_error *err) {
    if (!operator_) {
        job_list_u8_free(records);
        return not_open(err);
    }
    return batch(operator_->process, records, ret, err);
}

bool exports_weir_stream_two_input_process_batch_second(job_list_u8_t *records,
                                                        job_list_u8_t *ret, wit_error *err) {
    if (!operator_) return not_open(err);
    return batch(operator_->process_second, records, ret, err);
}

bool exports_weir_stream_operator_on_watermark(int64_t watermark, wit_error *err) {
    if (!operator_) return not_open(err);
    weir_ctx ctx = {0};
    ctx.has_timestamp = true;
    ctx.timestamp = watermark;
    if (operator_->on_watermark && operator_->on_watermark(&ctx, watermark)) {
        to_wit(&ctx, 0, err);
        return false;
    }
    return true;
}

bool exports_weir_stream_operator_on_timer(exports_weir_stream_operator_time_domain_t domain,
                                           job_list_u8_t *key, int64_t timestamp,
                                           wit_error *err) {
    if (!operator_) {
        job_list_u8_free(key);
        return not_open(err);
    }
    weir_ctx ctx = {0};
    ctx.has_key = true;
    ctx.key.data = key->ptr;
    ctx.key.len = key->len;
    ctx.has_timestamp = true;
    ctx.timestamp = timestamp;
    int failed = operator_->on_timer &&
                 operator_->on_timer(&ctx, (weir_time_domain)domain, timestamp);
    job_list_u8_free(key);
    if (failed) {
        to_wit(&ctx, 0, err);
        return false;
    }
    return true;
}

bool exports_weir_stream_operator_snapshot_state(job_list_u8_t *ret, wit_error *err) {
    if (!operator_) return not_open(err);
    weir_buffer state = {0};
    weir_ctx ctx = {0};
    if (operator_->snapshot && operator_->snapshot(&ctx, &state)) {
        weir_buffer_free(&state);
        to_wit(&ctx, 0, err);
        return false;
    }
    /* The host snapshots keyed state right after this returns: it must hold every write. */
    weir__state_cache_flush();
    ret->ptr = state.data;
    ret->len = state.len;
    return true;
}

bool exports_weir_stream_operator_restore_state(job_list_u8_t *state, wit_error *err) {
    if (!operator_) {
        job_list_u8_free(state);
        return not_open(err);
    }
    weir_ctx ctx = {0};
    weir_bytes bytes = {state->ptr, state->len};
    int failed = operator_->restore && operator_->restore(&ctx, bytes);
    job_list_u8_free(state);
    if (failed) {
        to_wit(&ctx, 0, err);
        return false;
    }
    return true;
}

bool exports_weir_stream_operator_close(wit_error *err) {
    if (!operator_) return not_open(err);
    weir_ctx ctx = {0};
    int failed = operator_->close && operator_->close(&ctx);
    weir__state_cache_flush();
    if (failed) {
        to_wit(&ctx, 0, err);
        return false;
    }
    return true;
}

bool exports_weir_stream_job_plan_plan(job_list_tuple2_string_string_t *args,
                                       job_option_string_t *ret, job_string_t *err) {
    (void)err;
    job_list_tuple2_string_string_free(args);
    const char *plan = weir_job_plan ? weir_job_plan() : NULL;
    ret->is_some = plan != NULL;
    if (plan) job_string_dup(&ret->val, plan);
    return true;
}

void exports_weir_stream_job_plan_operators(job_list_string_t *ret) {
    size_t n = 0;
    while (weir_operators[n].name) n++;
    ret->len = n;
    ret->ptr = calloc(n ? n : 1, sizeof(job_string_t));
    if (!ret->ptr) out_of_memory();
    for (size_t i = 0; i < n; i++) job_string_dup(&ret->ptr[i], weir_operators[i].name);
}
