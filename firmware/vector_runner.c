/* QEMU test runner: reads input vectors from the host file vectors.bin with
 * semihosting, runs the model on each and writes the outputs to outputs.bin,
 * so hundreds of vectors need no reflashing and no huge firmware image. */
#include "tinyds_board.h"
#include "tinyds_model.h"

/* One vector: every input's bytes in order; one output record: every output's. */
static tinyds_input_t input[TINYDS_INPUT_TOTAL_SIZE];
static tinyds_output_t output[TINYDS_OUTPUT_TOTAL_SIZE];

#if TINYDS_INPUT_COUNT == 1 && TINYDS_OUTPUT_COUNT == 1
static int run(void)
{
    return TINYDS_RUN(input, output);
}
#else
/* Several inputs or outputs: each one's bytes inside the vector / the record. */
static int run(void)
{
    static const uint32_t in_size[TINYDS_INPUT_COUNT] = TINYDS_INPUT_SIZES;
    static const uint32_t out_size[TINYDS_OUTPUT_COUNT] = TINYDS_OUTPUT_SIZES;
    const int8_t *inputs[TINYDS_INPUT_COUNT];
    int8_t *outputs[TINYDS_OUTPUT_COUNT];
    uint32_t at = 0;
    for (int i = 0; i < TINYDS_INPUT_COUNT; i++) {
        inputs[i] = input + at;
        at += in_size[i];
    }
    at = 0;
    for (int i = 0; i < TINYDS_OUTPUT_COUNT; i++) {
        outputs[i] = output + at;
        at += out_size[i];
    }
    return TINYDS_RUN_MULTI(inputs, outputs);
}
#endif

#ifdef TINYDS_DUMP
static int dump_fd = -1;

/* Every layer's output bytes to layers.bin, for verify's per-layer comparison. */
void tinyds_dump(int layer, const int8_t *bytes, int size)
{
    (void)layer;
    if (tinyds_sh_write(dump_fd, bytes, (size_t)size) != 0) {
        tinyds_puts("tinyds: layer dump failed\n");
    }
}
#endif

int main(void)
{
    tinyds_board_init();
    int in = tinyds_sh_open("vectors.bin", 1);
    int out = tinyds_sh_open("outputs.bin", 5);
#ifdef TINYDS_DUMP
    dump_fd = tinyds_sh_open("layers.bin", 5);
    if (dump_fd < 0) {
        in = -1;
    }
#endif
    if (in < 0 || out < 0) {
        tinyds_puts("tinyds: cannot open vectors.bin / outputs.bin\n");
        return 2;
    }
    uint32_t n = 0;
    while (tinyds_sh_read(in, input, sizeof input) == (int)sizeof input) {
        if (run() != 0 || tinyds_sh_write(out, output, sizeof output) != 0) {
            tinyds_puts("tinyds: run or write failed\n");
            return 1;
        }
        n++;
    }
    tinyds_sh_close(in);
    tinyds_sh_close(out);
#ifdef TINYDS_DUMP
    tinyds_sh_close(dump_fd);
#endif
    tinyds_puts("tinyds: vectors ");
    tinyds_put_u32(n);
    tinyds_puts("\n");
    return 0;
}
