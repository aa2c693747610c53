#include "harness.h"
const tl_test tests_gguf_write[] = {{NULL, NULL}};
