/*
 * Word count in C: the same three operators as the Rust example (tokenize, key-by-word,
 * count), with the weir C SDK, and the same plan.
 *
 *     weir build --language c -o target/wordcount-c.wasm examples/wordcount-c/wordcount.c
 *     weir run target/wordcount-c.wasm --arg input=TEXT --arg output=COUNTS
 *
 * Words are runs of letters and digits, lowercased. C has no Unicode tables of its own: this
 * tokenizer knows ASCII and the Latin-1 letters (U+00C0-U+00FF, where lowercasing is +0x20),
 * and treats every other non-ASCII character as a letter it leaves as it is.
 */
#include <stdio.h>
#include <string.h>

#include "weir.h"

/* The next code point of `s` at `*i` (advancing it), or -1 for a byte that starts none. */
static long next_code_point(weir_bytes s, size_t *i) {
    uint8_t b = s.data[(*i)++];
    if (b < 0x80) return b;
    int more = b >= 0xF0 ? 3 : b >= 0xE0 ? 2 : b >= 0xC0 ? 1 : -1;
    if (more < 0) return -1;
    long c = b & (0x3F >> more);
    for (int k = 0; k < more; k++) {
        if (*i >= s.len || (s.data[*i] & 0xC0) != 0x80) return -1;
        c = c << 6 | (s.data[(*i)++] & 0x3F);
    }
    return c;
}

static bool is_word_char(long c) {
    if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (c < 0xC0) return c == 0xAA || c == 0xB2 || c == 0xB3 || c == 0xB5 || c == 0xB9 || c == 0xBA ||
                         (c >= 0xBC && c <= 0xBE);
    return c != 0xD7 && c != 0xF7;
}

static long lower(long c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    return c;
}

static int push_utf8(weir_buffer *b, long c) {
    uint8_t out[4];
    size_t n;
    if (c < 0x80) {
        out[0] = (uint8_t)c;
        n = 1;
    } else if (c < 0x800) {
        out[0] = (uint8_t)(0xC0 | c >> 6);
        out[1] = (uint8_t)(0x80 | (c & 0x3F));
        n = 2;
    } else if (c < 0x10000) {
        out[0] = (uint8_t)(0xE0 | c >> 12);
        out[1] = (uint8_t)(0x80 | (c >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (c & 0x3F));
        n = 3;
    } else {
        out[0] = (uint8_t)(0xF0 | c >> 18);
        out[1] = (uint8_t)(0x80 | (c >> 12 & 0x3F));
        out[2] = (uint8_t)(0x80 | (c >> 6 & 0x3F));
        out[3] = (uint8_t)(0x80 | (c & 0x3F));
        n = 4;
    }
    return weir_buffer_push(b, out, n);
}

static weir_buffer word;

/* Emits the word collected so far, if any. */
static int flush_word(weir_ctx *ctx) {
    if (word.len == 0) return 0;
    weir_bytes w = {word.data, word.len};
    weir_buffer_clear(&word);
    return weir_emit(ctx, w);
}

/* Emits the lowercased words of a line; bytes that are not UTF-8 separate words. */
static int tokenize(weir_ctx *ctx, weir_bytes line) {
    weir_buffer_clear(&word);
    size_t i = 0;
    while (i < line.len) {
        long c = next_code_point(line, &i);
        if (c >= 0 && is_word_char(c)) {
            if (push_utf8(&word, lower(c))) return weir_fail(ctx, "out of memory");
        } else if (flush_word(ctx)) {
            return -1;
        }
    }
    return flush_word(ctx);
}

/* A word is its own key. */
static int key_by_word(weir_ctx *ctx, weir_bytes value, weir_buffer *key) {
    if (weir_buffer_push(key, value.data, value.len)) return weir_fail(ctx, "out of memory");
    return 0;
}

static weir_state count_state;

static int count_open(weir_ctx *ctx) {
    (void)ctx;
    count_state = weir_value_state("count");
    return 0;
}

/* The running count of the record's key, as the line `word count`. */
static int count_process(weir_ctx *ctx, const weir_record *record) {
    (void)record;
    uint64_t count = 0;
    weir_bytes stored;
    if (weir_value_get(ctx, count_state, &stored)) {
        if (stored.len != 8) return weir_fail(ctx, "state `count` holds %zu bytes, not 8", stored.len);
        for (int i = 7; i >= 0; i--) count = count << 8 | stored.data[i];
    }
    count++;
    uint8_t bytes[8];
    for (int i = 0; i < 8; i++) bytes[i] = (uint8_t)(count >> (8 * i));
    weir_bytes value = {bytes, 8};
    weir_value_set(ctx, count_state, value);
    weir_bytes key = weir_key(ctx);
    static weir_buffer line;
    weir_buffer_clear(&line);
    char digits[24];
    int n = snprintf(digits, sizeof digits, " %llu", (unsigned long long)count);
    if (weir_buffer_push(&line, key.data, key.len) || weir_buffer_push(&line, digits, (size_t)n))
        return weir_fail(ctx, "out of memory");
    weir_bytes out = {line.data, line.len};
    return weir_emit(ctx, out);
}

WEIR_OPERATORS(
    WEIR_FLAT_MAP("tokenize", tokenize),
    WEIR_KEY_BY("key-by-word", key_by_word),
    WEIR_KEYED_PROCESS("count", .open = count_open, .process = count_process)
)

const char *weir_job_plan(void) {
    return "name = \"wordcount-c\"\n"
           "parallelism = 2\n"
           "[[source]]\nid = \"lines\"\nkind = \"file\"\npath = \"${input}\"\n"
           "[[operator]]\nid = \"tokenize\"\ninput = \"lines\"\n"
           "[[operator]]\nid = \"key-by-word\"\ninput = \"tokenize\"\n"
           "[[operator]]\nid = \"count\"\ninput = \"key-by-word\"\nedge = \"hash\"\n"
           "[[sink]]\nid = \"counts\"\nkind = \"file\"\npath = \"${output}\"\ninput = \"count\"\n"
           "edge = \"rebalance\"\nparallelism = 1\n";
}
