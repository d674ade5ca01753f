/* The operators of `weir-bench languages` in C: `map` (x*3+1 of an 8-byte integer) and
 * `keyed-sum` (a running sum per key in value state). */
#include "weir.h"

#include <string.h>

/* wasm is little-endian: the record's bytes are the integer as it lies in memory. */
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static int map(weir_ctx *ctx, weir_bytes in, weir_buffer *out) {
    if (in.len != 8) return weir_fail(ctx, "expected 8 bytes");
    uint8_t bytes[8];
    put_u64(bytes, get_u64(in.data) * 3 + 1);
    return weir_buffer_push(out, bytes, 8);
}

static weir_state sum_state;

static int sum_open(weir_ctx *ctx) {
    (void)ctx;
    sum_state = weir_value_state("sum");
    return 0;
}

static int sum_process(weir_ctx *ctx, const weir_record *record) {
    weir_bytes stored;
    uint64_t sum = weir_value_get(ctx, sum_state, &stored) && stored.len == 8 ? get_u64(stored.data) : 0;
    sum += get_u64(record->value.data);
    uint8_t bytes[8];
    put_u64(bytes, sum);
    weir_bytes value = {bytes, 8};
    weir_value_set(ctx, sum_state, value);
    return weir_emit(ctx, value);
}

WEIR_OPERATORS(
    WEIR_MAP("map", map),
    WEIR_KEYED_PROCESS("keyed-sum", .open = sum_open, .process = sum_process)
)
