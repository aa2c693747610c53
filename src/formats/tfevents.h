/* tfevents.h - TensorBoard event files: scalars a TensorBoard (or its
 * EventAccumulator) reads.  A file is a sequence of TFRecords (u64 length,
 * masked CRC-32C of the length, the bytes, masked CRC-32C of the bytes), each an
 * `Event` protocol buffer; the first names the format ("brain.Event:2"). */
#ifndef TL_TFEVENTS_H
#define TL_TFEVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct {
    int fd; /* -1: closed */
    char path[4200];
} tl_tfevents;

/* CRC-32C (Castagnoli), as TFRecord uses it (before masking). */
uint32_t tl_crc32c(const void *data, size_t n);

/* Creates DIR/events.out.tfevents.<seconds>.<tag> (a new file each time: TensorBoard
 * reads every file of a directory) and writes the file-version record. */
int tl_tfevents_open(tl_tfevents *w, const char *dir, const char *tag, double wall_time, tl_error *err);
/* One scalar at a step. */
int tl_tfevents_scalar(tl_tfevents *w, const char *tag, long step, double wall_time, float value, tl_error *err);
/* A session start at `step`: TensorBoard then drops the points of this and later steps
 * that an interrupted run had written (a resumed run writes them again). */
int tl_tfevents_restart(tl_tfevents *w, long step, double wall_time, tl_error *err);
void tl_tfevents_close(tl_tfevents *w);

/* The bytes of one record holding a scalar event (for tests): returns its length
 * (at most cap is written; 0 if the tag is too long). */
size_t tl_tfevents_scalar_record(uint8_t *out, size_t cap, const char *tag, long step, double wall_time, float value);

#endif
