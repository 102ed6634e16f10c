/* Register-level console, cycle counter and semihosting; see tinyds_board.h. */
#include "tinyds_board.h"

#define REG(addr) (*(volatile uint32_t *)(addr))

/* ---- semihosting: BKPT 0xAB, operation in r0, argument block in r1 ---- */
static int sh_call(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static size_t str_len(const char *s)
{
    size_t n = 0;
    while (s[n]) {
        n++;
    }
    return n;
}

int tinyds_sh_open(const char *path, int mode)
{
    uint32_t args[3] = {(uint32_t)path, (uint32_t)mode, (uint32_t)str_len(path)};
    return sh_call(0x01, args);
}

int tinyds_sh_read(int fd, void *buf, size_t len)
{
    uint32_t args[3] = {(uint32_t)fd, (uint32_t)buf, (uint32_t)len};
    return (int)len - sh_call(0x06, args);
}

int tinyds_sh_write(int fd, const void *buf, size_t len)
{
    uint32_t args[3] = {(uint32_t)fd, (uint32_t)buf, (uint32_t)len};
    return sh_call(0x05, args);
}

int tinyds_sh_close(int fd)
{
    uint32_t args[1] = {(uint32_t)fd};
    return sh_call(0x02, args);
}

void tinyds_exit(int code)
{
#if defined(TINYDS_CONSOLE_SEMIHOSTING) || defined(TINYDS_SEMIHOSTING_EXIT)
    /* SYS_EXIT: ADP_Stopped_ApplicationExit ends QEMU with status 0, anything else 1. */
    sh_call(0x18, (const void *)(code == 0 ? 0x20026u : 0x20024u));
#endif
    (void)code;
    for (;;) {
        __asm__ volatile("wfi");
    }
}

/* ---- console ---- */
#if defined(TINYDS_CONSOLE_SEMIHOSTING)
static void console_init(void) {}
void tinyds_putc(char c)
{
    sh_call(0x03, &c); /* SYS_WRITEC */
}
void tinyds_puts(const char *s)
{
    sh_call(0x04, s); /* SYS_WRITE0 */
}
#else
#if defined(TINYDS_CONSOLE_CMSDK_UART0)
/* Arm CMSDK APB UART0 of the MPS2 boards. */
#define UART0 0x40004000u
static void console_init(void)
{
    REG(UART0 + 0x10) = 16;  /* BAUDDIV: the minimum */
    REG(UART0 + 0x08) = 1;   /* CTRL: TX enable */
}
void tinyds_putc(char c)
{
    while (REG(UART0 + 0x04) & 1u) { /* STATE.TXFULL */
    }
    REG(UART0 + 0x00) = (uint8_t)c;
}
#elif defined(TINYDS_CONSOLE_STM32F4_USART2)
/* Nucleo-F4: USART2 on PA2/PA3 (AF7) is the ST-Link virtual COM port.
 * After reset the core and APB1 run on HSI = 16 MHz: BRR 139 = 115200 baud. */
#define RCC 0x40023800u
#define GPIOA 0x40020000u
#define USART2 0x40004400u
static void console_init(void)
{
    REG(RCC + 0x30) |= 1u;            /* AHB1ENR.GPIOAEN */
    REG(RCC + 0x40) |= 1u << 17;      /* APB1ENR.USART2EN */
    REG(GPIOA + 0x00) = (REG(GPIOA + 0x00) & ~0xF0u) | 0xA0u;        /* PA2, PA3: AF */
    REG(GPIOA + 0x20) = (REG(GPIOA + 0x20) & ~0xFF00u) | 0x7700u;    /* AF7 */
    REG(USART2 + 0x08) = 139;         /* BRR */
    REG(USART2 + 0x0C) = (1u << 13) | (1u << 3); /* CR1: UE, TE */
}
void tinyds_putc(char c)
{
    while (!(REG(USART2 + 0x00) & (1u << 7))) { /* SR.TXE */
    }
    REG(USART2 + 0x04) = (uint8_t)c;
}
#elif defined(TINYDS_CONSOLE_NRF52_UART0)
/* nRF52840-DK: UART0 TX on P0.06 goes to the J-Link virtual COM port. */
#define UART0 0x40002000u
#define P0 0x50000000u
static void console_init(void)
{
    REG(P0 + 0x508) = 1u << 6;        /* OUTSET: idle high */
    REG(P0 + 0x518) = 1u << 6;        /* DIRSET: output */
    REG(UART0 + 0x50C) = 6;           /* PSELTXD */
    REG(UART0 + 0x524) = 0x01D7E000u; /* BAUDRATE 115200 */
    REG(UART0 + 0x500) = 4;           /* ENABLE: UART */
    REG(UART0 + 0x008) = 1;           /* TASKS_STARTTX */
}
void tinyds_putc(char c)
{
    REG(UART0 + 0x11C) = 0;           /* EVENTS_TXDRDY */
    REG(UART0 + 0x51C) = (uint8_t)c;  /* TXD */
    while (!REG(UART0 + 0x11C)) {
    }
}
#else
#error "define one TINYDS_CONSOLE_* (see tinyds_board.h)"
#endif
void tinyds_puts(const char *s)
{
    while (*s) {
        if (*s == '\n') {
            tinyds_putc('\r');
        }
        tinyds_putc(*s++);
    }
}
#endif

void tinyds_put_u32(uint32_t v)
{
    char buf[11];
    int i = 10;
    buf[i] = '\0';
    do {
        buf[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    tinyds_puts(&buf[i]);
}

void tinyds_put_i32(int32_t v)
{
    if (v < 0) {
        tinyds_putc('-');
        tinyds_put_u32(0u - (uint32_t)v);
    } else {
        tinyds_put_u32((uint32_t)v);
    }
}

/* ---- cycle counter ---- */
#if defined(TINYDS_COUNTER_TIM2)
#define TIM2 0x40000000u
static void counter_init(void)
{
    REG(0x40023840u) |= 1u;           /* RCC APB1ENR.TIM2EN (STM32F4) */
    REG(TIM2 + 0x28) = 0;             /* PSC */
    REG(TIM2 + 0x2C) = 0xFFFFFFFFu;   /* ARR */
    REG(TIM2 + 0x14) = 1;             /* EGR.UG: load PSC */
    REG(TIM2 + 0x00) = 1;             /* CR1.CEN */
}
uint32_t tinyds_counter(void) { return REG(TIM2 + 0x24); }
uint32_t tinyds_elapsed(uint32_t from, uint32_t to) { return to - from; }
#elif defined(__ARM_ARCH_6M__)
/* ARMv6-M has no DWT cycle counter: SysTick counts core clocks down from 2^24-1. */
static void counter_init(void)
{
    REG(0xE000E014u) = 0xFFFFFFu;     /* SYST_RVR */
    REG(0xE000E018u) = 0;             /* SYST_CVR */
    REG(0xE000E010u) = 5;             /* SYST_CSR: enable, core clock */
}
uint32_t tinyds_counter(void) { return 0xFFFFFFu - REG(0xE000E018u); }
uint32_t tinyds_elapsed(uint32_t from, uint32_t to) { return (to - from) & 0xFFFFFFu; }
#else
static void counter_init(void)
{
    REG(0xE000EDFCu) |= 1u << 24;     /* DEMCR.TRCENA */
    REG(0xE0001FB0u) = 0xC5ACCE55u;   /* DWT LAR unlock (Cortex-M7) */
    REG(0xE0001004u) = 0;             /* CYCCNT */
    REG(0xE0001000u) |= 1u;           /* CTRL.CYCCNTENA */
}
uint32_t tinyds_counter(void) { return REG(0xE0001004u); }
uint32_t tinyds_elapsed(uint32_t from, uint32_t to) { return to - from; }
#endif

void tinyds_board_init(void)
{
    console_init();
    counter_init();
}
