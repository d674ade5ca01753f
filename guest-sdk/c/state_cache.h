/* The SDK's write-back cache of keyed value state (see state_cache.c). */
#ifndef WEIR_STATE_CACHE_H
#define WEIR_STATE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weir.h"

bool weir__state_get(uint32_t state, const uint8_t *key, size_t len, const uint8_t **value,
                     size_t *value_len);
void weir__state_set(uint32_t state, const uint8_t *key, size_t len, const uint8_t *value,
                     size_t value_len);
void weir__state_clear(uint32_t state, const uint8_t *key, size_t len);
/* Hands every dirty entry to the host; call before `snapshot-state` returns and at `close`. */
void weir__state_cache_flush(void);
/* Past the cache's bound, hands the dirty entries over and empties it: between calls only, when
 * no value a get returned can still be in use. */
void weir__state_cache_trim(void);

#endif
