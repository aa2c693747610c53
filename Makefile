# tinyllama.c build.  `make` builds the CLI and the library; `make test` runs the
# unit and CLI tests (normal build and ASan+UBSan build); `make cuda` builds the GPU
# engine, build/tinyllama-cuda and build/test_cuda (needs nvcc; plain `make` never does);
# `make fuzz` builds the libFuzzer targets of fuzz/ into build-fuzz/ (needs clang).
CC      ?= gcc
BUILD   ?= build
OPT     ?= -O3
SAN     ?=
CFLAGS  ?=
# src/ holds one folder per subsystem (README's layout); headers are included by
# name, so every folder is on the include path
SRC_DIRS := $(sort $(filter-out src/cuda,$(patsubst %/,%,$(dir $(wildcard src/*/*.c src/*/*.h)))))
INC     := $(addprefix -I,$(SRC_DIRS))
CFLAGS  += -std=c11 $(OPT) -fno-math-errno -g -Wall -Wextra -Wshadow -fopenmp -D_GNU_SOURCE $(INC) $(SAN)
# OpenBLAS built for OpenMP shares our OpenMP thread pool (the pthread build fights
# it for the cores: measured ~35% of the step time lost to spinning, docs/dependencies.md).
# oneDNN (libdnnl-dev, also built on libgomp) is the other fp32 GEMM backend; src/compute/gemm.c
# picks between them from the CPU's flags.
BLAS_DIR ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
CFLAGS  += -I/usr/include/x86_64-linux-gnu/openblas-openmp
# MPI (data-parallel training, docs/distributed.md): MPI=auto uses mpicc's flags when
# mpicc exists, MPI=0 builds without it (one process only), MPI=1 requires it.
MPI     ?= auto
MPICC   ?= mpicc
ifeq ($(MPI),auto)
MPI := $(if $(shell command -v $(MPICC) 2>/dev/null),1,0)
endif
ifeq ($(MPI),1)
CFLAGS  += -DTL_WITH_MPI $(shell $(MPICC) --showme:compile 2>/dev/null || $(MPICC) -show | cut -d' ' -f2- | tr ' ' '\n' | grep '^-I' | tr '\n' ' ')
MPI_LIBS := $(shell $(MPICC) --showme:link 2>/dev/null || $(MPICC) -show | cut -d' ' -f2- | tr ' ' '\n' | grep '^-[Ll]' | tr '\n' ' ')
endif
LDLIBS  += $(MPI_LIBS)
LDLIBS  += -fopenmp -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -ldnnl -lcjson -lyaml -lmicrohttpd -lcairo -lzstd -lz -lm $(SAN)

SRC     := $(sort $(foreach d,$(SRC_DIRS),$(wildcard $(d)/*.c)))
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

# tests/test_cli.c tests the CLI's option parser, so cli_util.o joins the test binary
CLI_UTIL_OBJ := $(BUILD)/cli/cli_util.o
$(BUILD)/tests/%.o: CFLAGS += -Icli

$(BUILD)/test_unit: $(TST_OBJ) $(CLI_UTIL_OBJ) $(LIB)
	$(CC) $(CFLAGS) -Icli -o $@ $(TST_OBJ) $(CLI_UTIL_OBJ) $(LIB) $(LDLIBS)

# ---------------------------------------------------------------- CUDA (make cuda)
CUDA_HOME  ?= /usr/local/cuda
NVCC       ?= $(CUDA_HOME)/bin/nvcc
# sm_90: H100/H200; sm_80: A100.  Override e.g. CUDA_ARCHS="-gencode arch=compute_90,code=sm_90".
CUDA_ARCHS ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=sm_80
NVCCFLAGS  ?= -O3 -std=c++17 -lineinfo $(CUDA_ARCHS) $(INC) -Isrc/cuda -Xcompiler -Wall,-Wextra
CUDA_LDLIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcudart_static -ldl -lrt -lpthread -lstdc++
CU_SRC     := $(sort $(wildcard src/cuda/*.cu))
CU_OBJ     := $(CU_SRC:%.cu=$(BUILD)/%.o)
CUC_SRC    := $(sort $(wildcard src/cuda/*.c))
CUC_OBJ    := $(CUC_SRC:%.c=$(BUILD)/%.o)
CUDA_LIB   := $(BUILD)/libtinyllama_cuda.a
# the same CLI objects as the plain build: engine_adapter.o, linked as an object,
# defines the "cuda" entry that tl_engine_find (src/train/engine.c) looks up by a weak reference
CUDA_REG_OBJ := $(BUILD)/src/cuda/engine_adapter.o

cuda: $(BUILD)/tinyllama-cuda $(BUILD)/test_cuda

$(BUILD)/src/cuda/%.o: src/cuda/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

$(CUC_OBJ): CFLAGS += -Isrc/cuda
# NCCL collectives (loaded at run time: no NCCL headers needed) call the CUDA runtime
$(BUILD)/src/cuda/nccl_comm.o: CFLAGS += -I$(CUDA_HOME)/include

$(CUDA_LIB): $(CU_OBJ) $(CUC_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/tests/cuda/%.o: tests/cuda/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc/cuda -Itests -MMD -MP -c $< -o $@

$(BUILD)/tinyllama-cuda: $(CLI_OBJ) $(CUDA_REG_OBJ) $(CUDA_LIB) $(LIB)
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(CUDA_REG_OBJ) $(CUDA_LIB) $(LIB) $(LDLIBS) $(CUDA_LDLIBS)

$(BUILD)/test_cuda: $(BUILD)/tests/cuda/test_cuda.o $(CUDA_LIB) $(LIB)
	$(CC) $(CFLAGS) -o $@ $(BUILD)/tests/cuda/test_cuda.o $(CUDA_LIB) $(LIB) $(LDLIBS) $(CUDA_LDLIBS)

# ---------------------------------------------------------------- fuzzing (make fuzz)
# libFuzzer targets (docs/fuzzing.md): the library rebuilt with clang, ASan and UBSan
# and coverage instrumentation; one binary per fuzz/*.c.  No MPI: one process.
FUZZ_CC     ?= clang
FUZZ_BUILD  ?= build-fuzz
FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -O1 -g -Wall -Wextra -Wshadow -fopenmp -D_GNU_SOURCE $(INC) \
               -I/usr/include/x86_64-linux-gnu/openblas-openmp $(FUZZ_SAN)
FUZZ_LDLIBS := -fopenmp -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -ldnnl -lcjson -lyaml -lmicrohttpd -lcairo -lzstd -lz -lm
FUZZ_SRC    := $(sort $(wildcard fuzz/*.c))
FUZZ_BIN    := $(FUZZ_SRC:fuzz/%.c=$(FUZZ_BUILD)/%)
# clang 14 refuses the GCC target attributes of the inference kernels: they are built by
# $(CC), uninstrumented (no parser reaches them; the model code only links to them)
FUZZ_GCC    := src/compute/gemm_amx.c src/compute/gemm_quant_amx.c src/compute/matvec.c src/compute/matvec_quant_x86.c src/compute/matvec_quant_i8.c
FUZZ_OBJ    := $(patsubst %.c,$(FUZZ_BUILD)/%.o,$(filter-out $(FUZZ_GCC),$(SRC))) \
               $(patsubst %.c,$(FUZZ_BUILD)/gcc/%.o,$(FUZZ_GCC))
FUZZ_LIB    := $(FUZZ_BUILD)/libtinyllama.a

fuzz: $(FUZZ_BIN)

$(FUZZ_BUILD)/src/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/gcc/src/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 -g -fopenmp -D_GNU_SOURCE $(INC) -MMD -MP -c $< -o $@

$(FUZZ_LIB): $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/%: fuzz/%.c $(FUZZ_LIB)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -MMD -MP -MF $@.d -o $@ $< $(FUZZ_LIB) $(FUZZ_LDLIBS)

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

test: all
	tests/run.sh

clean:
	rm -rf build build-asan build-fuzz

.PHONY: all asan test clean cuda fuzz
-include $(OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TST_OBJ:.o=.d) $(CU_OBJ:.o=.d) $(CUC_OBJ:.o=.d)
-include $(FUZZ_OBJ:.o=.d) $(FUZZ_BIN:=.d)
