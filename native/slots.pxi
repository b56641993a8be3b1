# Slot stock: capacity, sold and held per slot (zone x day x time window), and per
# allotment (part of a slot's capacity reserved for one channel).
#
# Pool arithmetic: a slot's capacity is split into its allotments and a shared pool
# of capacity - reserved; a channel with an allotment on the slot sells from its
# allotment only, every other channel from the pool. sold/held are slot totals;
# allot_used is the part of them that sits in allotments.

cdef packed struct SlotRec:
    int64_t start          # UTC seconds, window start
    int64_t end            # UTC seconds, window end
    int32_t day            # venue-local day
    uint16_t zone
    int32_t capacity
    int32_t reserved       # sum of allotment capacities
    int32_t sold
    int32_t held
    int32_t allot_used     # sold + held inside allotments


cdef packed struct AllotRec:
    uint32_t slot
    int32_t capacity
    int32_t sold
    int32_t held


cdef class Slots:
    """Stock counters of every slot and allotment of a shard."""
    cdef SlotRec* s
    cdef AllotRec* a
    cdef readonly uint32_t n, n_allot
    cdef uint32_t cap, cap_allot

    def __cinit__(self):
        self.s = NULL
        self.a = NULL
        self.n = self.n_allot = self.cap = self.cap_allot = 0

    def __dealloc__(self):
        free(self.s)
        free(self.a)

    cdef void _grow(self, uint32_t need):
        cdef uint32_t c
        if need > self.cap:
            c = max(need, self.cap * 2, 64)
            p = <SlotRec*>realloc(self.s, c * sizeof(SlotRec))
            if p == NULL:
                raise MemoryError()
            self.s = p
            self.cap = c

    cdef void _grow_allot(self, uint32_t need):
        cdef uint32_t c
        if need > self.cap_allot:
            c = max(need, self.cap_allot * 2, 64)
            p = <AllotRec*>realloc(self.a, c * sizeof(AllotRec))
            if p == NULL:
                raise MemoryError()
            self.a = p
            self.cap_allot = c

    def add(self, int zone, int day, int64_t start, int64_t end, int capacity):
        """Append a slot; returns its index."""
        self._grow(self.n + 1)
        cdef SlotRec* r = &self.s[self.n]
        memset(r, 0, sizeof(SlotRec))
        r.zone = zone
        r.day = day
        r.start = start
        r.end = end
        r.capacity = capacity
        self.n += 1
        return self.n - 1

    def add_allotment(self, uint32_t slot, int capacity):
        """Append an allotment of `capacity` on `slot`; False if the pool lacks room."""
        if self.pool_free(slot) < capacity:
            return -1
        self._grow_allot(self.n_allot + 1)
        cdef AllotRec* r = &self.a[self.n_allot]
        r.slot = slot
        r.capacity = capacity
        r.sold = r.held = 0
        self.s[slot].reserved += capacity
        self.n_allot += 1
        return self.n_allot - 1

    cpdef int pool_free(self, uint32_t slot):
        cdef SlotRec* r = &self.s[slot]
        return r.capacity - r.reserved - (r.sold + r.held - r.allot_used)

    cpdef int allot_free(self, uint32_t allot):
        cdef AllotRec* r = &self.a[allot]
        return r.capacity - r.sold - r.held

    def set_capacity(self, uint32_t slot, int capacity):
        """Change a slot's capacity; False if it would fall below what is taken."""
        cdef SlotRec* r = &self.s[slot]
        if capacity - r.reserved < r.sold + r.held - r.allot_used:
            return False
        r.capacity = capacity
        return True

    def set_allotment(self, uint32_t allot, int capacity):
        """Change an allotment's capacity; False if taken stock or the pool forbid it."""
        cdef AllotRec* r = &self.a[allot]
        cdef int delta = capacity - r.capacity
        if capacity < r.sold + r.held or (delta > 0 and self.pool_free(r.slot) < delta):
            return False
        r.capacity = capacity
        self.s[r.slot].reserved += delta
        return True

    cpdef bint take(self, uint32_t slot, int64_t allot, int qty):
        """Hold qty from the allotment (allot >= 0) or the pool; False if short."""
        cdef SlotRec* r = &self.s[slot]
        cdef AllotRec* ar
        if allot >= 0:
            ar = &self.a[allot]
            if ar.capacity - ar.sold - ar.held < qty:
                return False
            ar.held += qty
            r.allot_used += qty
        elif r.capacity - r.reserved - (r.sold + r.held - r.allot_used) < qty:
            return False
        r.held += qty
        return True

    cpdef void release(self, uint32_t slot, int64_t allot, int qty):
        """Give back held stock (hold released or expired)."""
        self.s[slot].held -= qty
        if allot >= 0:
            self.a[allot].held -= qty
            self.s[slot].allot_used -= qty

    cpdef void sell(self, uint32_t slot, int64_t allot, int qty):
        """Turn held stock into sold stock (hold confirmed)."""
        self.s[slot].held -= qty
        self.s[slot].sold += qty
        if allot >= 0:
            self.a[allot].held -= qty
            self.a[allot].sold += qty

    cpdef void unsell(self, uint32_t slot, int64_t allot, int qty):
        """Give back sold stock (tickets refunded)."""
        self.s[slot].sold -= qty
        if allot >= 0:
            self.a[allot].sold -= qty
            self.s[slot].allot_used -= qty

    def fill_pct(self, uint32_t i):
        """Percent of slot i's capacity sold or held (100.0 without capacity): what a
        fill-rate pricing rule reads on every priced hold, without a dict."""
        if i >= self.n:
            raise IndexError(i)
        cdef SlotRec* r = &self.s[i]
        return 100.0 * (r.sold + r.held) / r.capacity if r.capacity else 100.0

    def slot(self, uint32_t i):
        """Counters of slot i as a dict."""
        if i >= self.n:
            raise IndexError(i)
        cdef SlotRec* r = &self.s[i]
        return {"zone": r.zone, "day": r.day, "start": r.start, "end": r.end,
                "capacity": r.capacity, "reserved": r.reserved, "sold": r.sold,
                "held": r.held, "allot_used": r.allot_used}

    def allotment(self, uint32_t i):
        if i >= self.n_allot:
            raise IndexError(i)
        cdef AllotRec* r = &self.a[i]
        return {"slot": r.slot, "capacity": r.capacity, "sold": r.sold, "held": r.held}

    cdef inline int64_t start_of(self, uint32_t i) noexcept nogil:
        return self.s[i].start

    cdef inline int64_t end_of(self, uint32_t i) noexcept nogil:
        return self.s[i].end

    def dump(self):
        return (PyBytes_FromStringAndSize(<char*>self.s, self.n * sizeof(SlotRec)),
                PyBytes_FromStringAndSize(<char*>self.a, self.n_allot * sizeof(AllotRec)))

    def load(self, bytes slots, bytes allots):
        if len(slots) % sizeof(SlotRec) or len(allots) % sizeof(AllotRec):
            raise ValueError("slot snapshot has the wrong record size")
        cdef uint32_t n = len(slots) // sizeof(SlotRec)
        cdef uint32_t na = len(allots) // sizeof(AllotRec)
        self._grow(n)
        self._grow_allot(na)
        memcpy(self.s, PyBytes_AS_STRING(slots), len(slots))
        memcpy(self.a, PyBytes_AS_STRING(allots), len(allots))
        self.n = n
        self.n_allot = na
