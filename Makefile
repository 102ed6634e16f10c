# The README's two commands: `make example` and `make test`.
PY ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup toolchain example test

setup:
	$(PY) -m pip install -q -r requirements-dev.txt -e .

toolchain:
	@command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null \
	  && command -v clang >/dev/null && [ -f /usr/lib/arm-none-eabi/newlib/libc.a ] \
	  && command -v chromium >/dev/null && command -v cmake >/dev/null && command -v ninja >/dev/null \
	  || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq \
	       gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm clang chromium cmake ninja-build; }

example: setup
	tinyds generate examples/digits_dscnn.pt --mcu stm32f4 --calib examples/digits_calib.npy -o out/
	tinyds verify out/

test: setup toolchain
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadgroup
