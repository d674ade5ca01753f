/*
 * A write-back cache of keyed value state in the guest's memory: an import call costs ~100 ns
 * or more, so reads the instance has seen are served here, writes stay here, and the dirty
 * entries go to the host in one `value-write-batch` per state before `snapshot-state` returns,
 * at `close`, and when the cache outgrows its bound (it then starts empty). The host reads
 * keyed state only when it snapshots it, right after `snapshot-state`, so its copy is exact
 * whenever it looks. Keys over 1 KiB and values over 64 KiB go to the host at once, so its
 * size limits refuse an oversized value in the call that wrote it. (The Rust SDK's cache,
 * guest-sdk/src/cache.rs, does the same.)
 */
#include "state_cache.h"

#include <stdlib.h>
#include <string.h>

#include "bindings/job.h"

/* PRESENT: the key has a value; DIRTY: the host has not seen it yet; UNKNOWN: read it from the
 * host again (it was written through). */
enum { PRESENT = 1, DIRTY = 2, UNKNOWN = 4 };
enum { MAX_CACHED_KEY = 1024, MAX_CACHED_VALUE = 64 << 10, MAX_ENTRIES = 1 << 16 };

typedef struct {
    uint8_t *key; /* NULL: an empty slot */
    uint32_t key_len;
    uint32_t state;
    uint64_t hash;
    uint8_t *value;
    uint32_t value_len;
    uint32_t value_cap;
    uint8_t flags;
} slot;

static slot *slots = NULL;
static size_t capacity = 0; /* a power of two */
static size_t used = 0;

void weir__panic_oom(void);

/* Eight bytes at a time: an FNV step per byte, with its 64-bit multiply, was most of a
 * lookup. */
static uint64_t hash_of(uint32_t state, const uint8_t *key, size_t len) {
    const uint64_t k = 0x9e3779b97f4a7c15ull;
    uint64_t h = ((uint64_t)state + len) * k;
    for (; len >= 8; len -= 8, key += 8) {
        uint64_t word;
        __builtin_memcpy(&word, key, 8);
        h = ((h ^ word) * k);
        h ^= h >> 32;
    }
    if (len) {
        uint64_t word = 0;
        for (size_t i = 0; i < len; i++) word |= (uint64_t)key[i] << (8 * i);
        h = ((h ^ word) * k);
    }
    /* murmur3's finalizer: every input bit reaches the low bits the table indexes by (big-endian
     * integer keys differ in their last byte, the multiply's top bits). */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

/* Whether two keys of `len` bytes are equal: inline, since wasi-libc's memcmp is a call. */
static bool same_key(const uint8_t *a, const uint8_t *b, size_t len) {
    for (; len >= 8; len -= 8, a += 8, b += 8) {
        uint64_t x, y;
        __builtin_memcpy(&x, a, 8);
        __builtin_memcpy(&y, b, 8);
        if (x != y) return false;
    }
    while (len--) {
        if (*a++ != *b++) return false;
    }
    return true;
}

static slot *find(uint32_t state, const uint8_t *key, size_t len, uint64_t h) {
    if (!capacity) return NULL;
    for (size_t i = h & (capacity - 1);; i = (i + 1) & (capacity - 1)) {
        slot *s = &slots[i];
        if (!s->key) return s;
        if (s->hash == h && s->state == state && s->key_len == len && same_key(s->key, key, len))
            return s;
    }
}

/* The slot the last lookup found: a process function mostly reads a key's value and then
 * writes it, so the write finds it without hashing. Forgotten when slots move. */
static slot *last = NULL;

static void grow(void) {
    last = NULL;
    size_t old_capacity = capacity;
    slot *old = slots;
    capacity = capacity ? capacity * 2 : 1024;
    slots = calloc(capacity, sizeof(slot));
    if (!slots) weir__panic_oom();
    for (size_t i = 0; i < old_capacity; i++) {
        if (!old[i].key) continue;
        slot *s = find(old[i].state, old[i].key, old[i].key_len, old[i].hash);
        *s = old[i];
    }
    free(old);
}

static void free_all(void) {
    last = NULL;
    for (size_t i = 0; i < capacity; i++) {
        free(slots[i].key);
        free(slots[i].value);
    }
    free(slots);
    slots = NULL;
    capacity = used = 0;
}

/* The slot of (state, key), made (from the host's value) when the cache had none. The cache
 * grows past its bound within a call; `weir__state_cache_trim` empties it between calls. */
/* Takes the host's answer for a slot: an empty value arrives as a dangling non-null pointer
 * (the canonical ABI allocates nothing for it), which must never reach free or realloc. */
static void keep(slot *s, job_list_u8_t got) {
    if (got.len == 0) {
        s->value = NULL;
        s->value_len = s->value_cap = 0;
    } else {
        s->value = got.ptr; /* malloc'd by the canonical ABI: ours to keep */
        s->value_len = s->value_cap = (uint32_t)got.len;
    }
    s->flags = PRESENT;
}

void weir__state_cache_trim(void) {
    /* Between calls, when no value the SDK handed out can still be in use. */
    if (used >= MAX_ENTRIES) {
        weir__state_cache_flush();
        free_all();
    }
}

static slot *entry(uint32_t state, const uint8_t *key, size_t len, bool load) {
    if (last && last->state == state && last->key_len == len && same_key(last->key, key, len))
        return last;
    if ((used + 1) * 2 > capacity) grow();
    uint64_t h = hash_of(state, key, len);
    slot *s = find(state, key, len, h);
    last = s;
    if (s->key) return s;
    s->key = malloc(len ? len : 1);
    if (!s->key) weir__panic_oom();
    memcpy(s->key, key, len);
    s->key_len = (uint32_t)len;
    s->state = state;
    s->hash = h;
    s->value = NULL;
    s->value_len = s->value_cap = 0;
    s->flags = 0;
    used++;
    if (load) {
        job_list_u8_t k = {(uint8_t *)key, len};
        job_list_u8_t got;
        if (weir_stream_keyed_state_value_get(state, &k, &got)) keep(s, got);
    }
    return s;
}

static void drop_cached(uint32_t state, const uint8_t *key, size_t len) {
    /* A large key or value bypasses the cache: write through, and forget what it held (it is
     * clean once the host has the new value; a stale copy must not be served). */
    slot *s = find(state, key, len, hash_of(state, key, len));
    if (s && s->key) {
        free(s->value);
        s->value = NULL;
        s->value_len = s->value_cap = 0;
        s->flags = UNKNOWN;
    }
}

bool weir__state_get(uint32_t state, const uint8_t *key, size_t len, const uint8_t **value,
                     size_t *value_len) {
    if (len > MAX_CACHED_KEY) {
        static job_list_u8_t got;
        job_list_u8_free(&got);
        job_list_u8_t k = {(uint8_t *)key, len};
        if (!weir_stream_keyed_state_value_get(state, &k, &got)) {
            got.ptr = NULL;
            got.len = 0;
            return false;
        }
        *value = got.ptr;
        *value_len = got.len;
        return true;
    }
    slot *s = entry(state, key, len, true);
    if (s->flags & UNKNOWN) {
        job_list_u8_t k = {(uint8_t *)key, len};
        job_list_u8_t got;
        s->flags = 0;
        if (weir_stream_keyed_state_value_get(state, &k, &got)) keep(s, got);
    }
    if (!(s->flags & PRESENT)) return false;
    *value = s->value;
    *value_len = s->value_len;
    return true;
}

void weir__state_set(uint32_t state, const uint8_t *key, size_t len, const uint8_t *value,
                     size_t value_len) {
    if (len > MAX_CACHED_KEY || value_len > MAX_CACHED_VALUE) {
        if (len <= MAX_CACHED_KEY) drop_cached(state, key, len);
        job_list_u8_t k = {(uint8_t *)key, len};
        job_list_u8_t v = {(uint8_t *)value, value_len};
        weir_stream_keyed_state_value_set(state, &k, &v);
        return;
    }
    slot *s = entry(state, key, len, false);
    if (s->value_cap < value_len) {
        /* Copied before the old buffer goes: `value` may point into it (a get's result). */
        uint8_t *grown = malloc(value_len);
        if (!grown) weir__panic_oom();
        memcpy(grown, value, value_len);
        free(s->value);
        s->value = grown;
        s->value_cap = (uint32_t)value_len;
    } else if (value_len) {
        memmove(s->value, value, value_len);
    }
    s->value_len = (uint32_t)value_len;
    s->flags = PRESENT | DIRTY;
}

void weir__state_clear(uint32_t state, const uint8_t *key, size_t len) {
    if (len > MAX_CACHED_KEY) {
        job_list_u8_t k = {(uint8_t *)key, len};
        weir_stream_keyed_state_value_clear(state, &k);
        return;
    }
    slot *s = entry(state, key, len, false);
    s->value_len = 0;
    s->flags = DIRTY;
}

/* Appends a framed record with `key` and `value` to `b`. */
static void frame(weir_buffer *b, const uint8_t *key, uint32_t key_len, const uint8_t *value,
                  uint32_t value_len) {
    uint8_t head[9];
    uint32_t body = 1 + 4 + key_len + value_len;
    for (int i = 0; i < 4; i++) head[i] = (uint8_t)(body >> (8 * i));
    head[4] = 2; /* has key */
    for (int i = 0; i < 4; i++) head[5 + i] = (uint8_t)(key_len >> (8 * i));
    if (weir_buffer_push(b, head, 9) || weir_buffer_push(b, key, key_len) ||
        weir_buffer_push(b, value, value_len))
        weir__panic_oom();
}

void weir__state_cache_flush(void) {
    weir_buffer sets = {0}, clears = {0};
    for (;;) {
        /* One state at a time: the first dirty slot's. */
        uint32_t state = 0;
        bool any = false;
        for (size_t i = 0; i < capacity && !any; i++) {
            if (slots[i].key && (slots[i].flags & DIRTY)) {
                state = slots[i].state;
                any = true;
            }
        }
        if (!any) break;
        weir_buffer_clear(&sets);
        weir_buffer_clear(&clears);
        for (size_t i = 0; i < capacity; i++) {
            slot *s = &slots[i];
            if (!s->key || s->state != state || !(s->flags & DIRTY)) continue;
            if (s->flags & PRESENT)
                frame(&sets, s->key, s->key_len, s->value, s->value_len);
            else
                frame(&clears, s->key, s->key_len, NULL, 0);
            s->flags &= (uint8_t)~DIRTY;
        }
        job_list_u8_t a = {sets.data, sets.len}, b = {clears.data, clears.len};
        weir_stream_keyed_state_value_write_batch(state, &a, &b);
    }
    weir_buffer_free(&sets);
    weir_buffer_free(&clears);
}
