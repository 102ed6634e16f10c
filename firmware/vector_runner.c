/* QEMU test runner: reads input vectors from the host file vectors.bin with
 * semihosting, runs the model on each and writes the outputs to outputs.bin,
 * so hundreds of vectors need no reflashing and no huge firmware image. */
#include "tinyds_board.h"
#include "tinyds_model.h"

static TINYDS_ELEMENT input[TINYDS_INPUT_SIZE];
static TINYDS_ELEMENT output[TINYDS_OUTPUT_SIZE];

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
        if (TINYDS_RUN(input, output) != 0 || tinyds_sh_write(out, output, sizeof output) != 0) {
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
