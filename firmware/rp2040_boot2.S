/* tinyds boot2 for the RP2040: the bootrom copies the first 256 bytes of flash
 * (this code and its CRC32) to SRAM, checks the CRC and runs it. It sets the
 * SSI up for execute-in-place with the standard SPI read command 03h, which
 * every SPI NOR flash answers (the Pico's W25Q080 included), then starts the
 * application through the vector table at 0x10000100. */
    .syntax unified
    .cpu cortex-m0plus
    .thumb
    .section .boot2, "ax"
    .global tinyds_boot2
    .type tinyds_boot2, %function
    .thumb_func
tinyds_boot2:
    push {lr}                       /* 0 when the bootrom called us */
    ldr r3, =0x18000000             /* XIP_SSI_BASE */
    movs r1, #0
    str r1, [r3, #0x08]             /* SSIENR = 0: configurable */
    movs r1, #4
    str r1, [r3, #0x14]             /* BAUDR: SCK = clk_sys / 4 */
    ldr r1, =0x001f0300             /* CTRLR0: SPI_FRF std, DFS_32 31 (32-bit frames), TMOD EEPROM read */
    str r1, [r3, #0x00]
    ldr r0, =0x180000f4             /* SPI_CTRLR0 */
    ldr r1, =0x03000218             /* XIP_CMD 03h, INST_L 8 bits, ADDR_L 24 bits, TRANS_TYPE 1C1A */
    str r1, [r0]
    movs r1, #0
    str r1, [r3, #0x04]             /* CTRLR1: NDF 0, one 32-bit frame per read */
    movs r1, #1
    str r1, [r3, #0x08]             /* SSIENR = 1 */
    pop {r0}
    cmp r0, #0
    beq 1f
    bx r0                           /* called by a debugger: return */
1:  ldr r0, =0x10000100             /* the application's vector table */
    ldr r1, =0xe000ed08             /* VTOR */
    str r0, [r1]
    ldmia r0, {r0, r1}
    msr msp, r0
    bx r1
    .ltorg
