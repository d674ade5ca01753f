/* The operators of {name}: `upper` upper-cases each line. The component also carries the job
 * (`weir_job_plan`), so `weir run {name}.wasm` takes it alone; `job.toml` is the same job as a
 * manifest. Build: weir build --language c -o {name}.wasm op.c */
#include "weir.h"

static int upper(weir_ctx *ctx, weir_bytes line, weir_buffer *out) {
    for (size_t i = 0; i < line.len; i++) {
        uint8_t c = line.data[i];
        if (weir_buffer_push_byte(out, c >= 'a' && c <= 'z' ? c - 32 : c))
            return weir_fail(ctx, "out of memory");
    }
    return 0;
}

WEIR_OPERATORS(
    WEIR_MAP("upper", upper)
)

const char *weir_job_plan(void) {
    return "name = \"{name}\"\n"
           "[[source]]\nid = \"lines\"\nkind = \"file\"\npath = \"${input}\"\n"
           "[[operator]]\nid = \"upper\"\ninput = \"lines\"\n"
           "[[sink]]\nid = \"out\"\nkind = \"file\"\npath = \"${output}\"\ninput = \"upper\"\n";
}
