# tinyllama.c build.  `make` builds the CLI and the library; `make test` runs the
# unit and CLI tests (normal build and ASan+UBSan build); `make cuda` (later) needs nvcc.
CC      ?= gcc
BUILD   ?= build
OPT     ?= -O3
SAN     ?=
CFLAGS  ?=
CFLAGS  += -std=c11 $(OPT) -g -Wall -Wextra -Wshadow -fopenmp -D_GNU_SOURCE -Isrc $(SAN)
LDLIBS  += -fopenmp -lopenblas -lcjson -lzstd -lz -lm $(SAN)

SRC     := $(sort $(wildcard src/*.c))
CLI_SRC := $(sort $(wildcard cli/*.c))
TST_SRC := $(sort $(wildcard tests/*.c))
OBJ     := $(SRC:%.c=$(BUILD)/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
TST_OBJ := $(TST_SRC:%.c=$(BUILD)/%.o)
LIB     := $(BUILD)/libtinyllama.a

all: $(BUILD)/tinyllama $(BUILD)/test_unit

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/tinyllama: $(CLI_OBJ) $(LIB)
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LDLIBS)

$(BUILD)/test_unit: $(TST_OBJ) $(LIB)
	$(CC) $(CFLAGS) -Icli -o $@ $(TST_OBJ) $(LIB) $(LDLIBS)

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

test: all
	tests/run.sh

clean:
	rm -rf build build-asan

.PHONY: all asan test clean
-include $(OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TST_OBJ:.o=.d)
