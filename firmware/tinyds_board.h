/* The little the firmware needs from a board: a console, a cycle counter, an
 * exit, and semihosting file I/O for the QEMU vector runner.
 * Console: -DTINYDS_CONSOLE_{SEMIHOSTING,CMSDK_UART0,STM32F4_USART2,NRF52_UART0}.
 * Counter: -DTINYDS_COUNTER_TIM2 (QEMU netduinoplus2 with -icount shift=0: one
 * tick per instruction), else DWT->CYCCNT on ARMv7-M, SysTick on ARMv6-M. */
#ifndef TINYDS_BOARD_H
#define TINYDS_BOARD_H

#include <stddef.h>
#include <stdint.h>

#define TINYDS_STACK_PAINT 0xC5C5C5C5u

void tinyds_board_init(void);
void tinyds_putc(char c);
void tinyds_puts(const char *s);
void tinyds_put_u32(uint32_t v);
void tinyds_put_i32(int32_t v);
void tinyds_exit(int code) __attribute__((noreturn));

uint32_t tinyds_counter(void);
/* Ticks from `from` to `to`, correct across one wrap of the counter. */
uint32_t tinyds_elapsed(uint32_t from, uint32_t to);
/* Deepest stack use since reset, in bytes (stack painted by startup.c). */
uint32_t tinyds_stack_used(void);

/* Semihosting host files (only with a debugger or QEMU -semihosting). */
int tinyds_sh_open(const char *path, int mode); /* mode 1 = "rb", 5 = "wb" */
int tinyds_sh_read(int fd, void *buf, size_t len); /* returns bytes read */
int tinyds_sh_write(int fd, const void *buf, size_t len); /* returns 0 on success */
int tinyds_sh_close(int fd);

#endif
