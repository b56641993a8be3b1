# The hot core of a shard, compiled into engine._core.
#
# Everything here is single-writer state owned by one shard: the engine calls it
# from the shard's writer only. It is written here, not copied: pyroaring objects
# are driven through their Python API (pyroaring ships no .pxd).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE

import array as _array
from pyroaring import BitMap

include "codes.pxi"
include "slots.pxi"
include "tickets.pxi"
include "seats.pxi"
