# Tickets: per-ticket records, the state bitmaps, entry rules, and scan decisions.
#
# A code admits one or more components (a combo admits several zones): a code's
# ticket id is the id of component 0, and component c has id + c. Every component is
# one admission right with its own record and its own place in the bitmaps.
#
# Decisions read the record's state byte (one array load); the roaring bitmaps
# issued/voided/blocked/used/inside/entered[day] are the set view of the same state
# (counts, offline bundles, reports) and are updated by the same functions, so they
# never disagree -- check() verifies that.
#
# A scan is decided by the rules, then applied (see _apply); replay of the journal applies
# the decision it records and never decides again (DESIGN.md 4.2).

cdef enum:
    ST_ISSUED = 1
    ST_VOIDED = 2
    ST_BLOCKED = 4
    ST_USED = 8
    ST_INSIDE = 16
    DIR_IN = 1
    DIR_OUT = 2
    NEVER = -2147483647

# Scan reasons: the closed set of DESIGN.md 4.5, in a fixed order.
REASONS = ("OK", "OK_REENTRY", "FORGED", "UNKNOWN", "VOIDED", "BLOCKED", "ALREADY_USED",
           "NOT_YET_VALID", "EXPIRED", "WRONG_SLOT", "WRONG_ZONE", "NOT_INSIDE",
           "ZONE_FULL", "ENTRY_LIMIT", "ENTRY_CLOSED")
cdef enum:
    R_OK = 0
    R_OK_REENTRY = 1
    R_FORGED = 2
    R_UNKNOWN = 3
    R_VOIDED = 4
    R_BLOCKED = 5
    R_ALREADY_USED = 6
    R_NOT_YET_VALID = 7
    R_EXPIRED = 8
    R_WRONG_SLOT = 9
    R_WRONG_ZONE = 10
    R_NOT_INSIDE = 11
    R_ZONE_FULL = 12
    R_ENTRY_LIMIT = 13
    R_ENTRY_CLOSED = 14

# entries per zone in TICK_S-second buckets, the last TICKS of them (64 minutes): the
# live view's entries of the last minute and per minute (Tickets.zone_ticks)
cdef enum:
    TICK_S = 10
    TICKS = 384

STATE_ISSUED = ST_ISSUED
STATE_VOIDED = ST_VOIDED
STATE_BLOCKED = ST_BLOCKED
STATE_USED = ST_USED
STATE_INSIDE = ST_INSIDE


cdef packed struct TicketRec:
    uint32_t slot            # slot of this component, NO_SLOT if none
    int32_t first_day        # venue-local days since 1970-01-01
    int32_t last_day
    int32_t visit_day        # day of the current (last) visit, NEVER if none
    uint16_t product
    uint16_t group           # persons admitted by this code
    uint16_t persons_in      # persons inside now
    uint16_t visit_admitted  # persons admitted in the current visit
    uint16_t entries         # visits started, all days
    uint16_t day_entries     # visits started on visit_day
    uint8_t comp             # component index within the code
    uint8_t state            # ST_* bits

RECORD_SIZE = sizeof(TicketRec)


cdef struct ProductRule:
    uint16_t venue
    uint8_t ncomp
    uint8_t reentry          # re-entry after exit on the same day
    uint16_t max_entries     # visits over the validity; 0 = unlimited
    uint16_t daily_entries   # visits per day; 0 = unlimited
    int32_t slot_grace       # seconds allowed before/after the slot window
    uint16_t zones[MAX_COMP]


cdef struct GateRule:
    uint16_t zone
    uint16_t venue
    uint8_t entry_closed     # an operator closed entry here (ENTRY_CLOSED)


cdef struct ZoneRule:
    uint16_t venue
    uint8_t enforce_exit     # exit without entry is refused (NOT_INSIDE)
    int32_t utc_offset       # seconds, venue-local time = UTC + offset
    int64_t live_capacity    # persons inside at most; 0 = no limit
    int64_t inside           # persons inside on `day`
    int32_t day              # latest venue-local day with an accepted entry here
    uint8_t entry_closed     # an operator closed entry through every gate (ENTRY_CLOSED)
    uint8_t once             # a merchant's consumption point: each person of a code once
    int64_t tick_at[TICKS]   # the TICK_S bucket (UTC seconds // TICK_S) each slot counts
    int32_t tick_n[TICKS]    # persons admitted (entries and re-entries) in it


cdef void* _grow_table(void* p, uint32_t* cap, uint32_t need, size_t item) except NULL:
    cdef uint32_t c
    if need <= cap[0] and p != NULL:
        return p
    c = max(need, cap[0] * 2, 16)
    q = realloc(p, c * item)
    if q == NULL:
        raise MemoryError()
    memset(<char*>q + cap[0] * item, 0, (c - cap[0]) * item)
    cap[0] = c
    return q


cdef inline int _take(int room, int persons) noexcept nogil:
    """Persons a scan asking `persons` (0: all) takes of `room`."""
    return room if persons <= 0 or persons > room else persons


cdef class Tickets:
    """Ticket records and state sets of one shard, and the scan decision."""
    cdef TicketRec* r
    cdef readonly uint32_t n
    cdef uint32_t cap
    cdef ProductRule* products
    cdef uint32_t n_products, cap_products
    cdef GateRule* gates
    cdef uint32_t n_gates, cap_gates
    cdef ZoneRule* zones
    cdef uint32_t n_zones, cap_zones
    cdef Slots slots
    cdef public object issued, voided, blocked, used, inside
    cdef public dict entered
    # ids whose state changed since the caller last took this set (offline bundles)
    cdef public object changed
    # offline scans uploaded by gates are facts: live capacity does not refuse them
    cdef public bint facts
    # batch mode: bitmap updates are collected and applied once per batch
    cdef bint defer
    cdef uint32_t* touched
    cdef Py_ssize_t n_touched, cap_touched
    # passage counters per venue-local day (reports): day -> array('q') laid out as
    # [G, Z, then per gate g < G and hour h: entries, re-entries, exits at
    # 2 + (g*24 + h)*3, then per zone z < Z its peak inside at 2 + G*72 + z]; the
    # day being counted is cached as a pointer into its array
    cdef dict flow
    cdef object f_arr
    cdef int64_t* fp
    cdef int32_t f_day
    cdef uint32_t f_g, f_z

    def __cinit__(self, Slots slots):
        self.r = NULL
        self.n = self.cap = 0
        self.products = NULL
        self.gates = NULL
        self.zones = NULL
        self.n_products = self.cap_products = 0
        self.n_gates = self.cap_gates = 0
        self.n_zones = self.cap_zones = 0
        self.slots = slots
        self.issued = BitMap()
        self.voided = BitMap()
        self.blocked = BitMap()
        self.used = BitMap()
        self.inside = BitMap()
        self.entered = {}
        self.changed = BitMap()
        self.facts = False
        self.defer = False
        self.touched = NULL
        self.n_touched = self.cap_touched = 0
        self.flow = {}
        self.f_arr = None
        self.fp = NULL
        self.f_day = NEVER
        self.f_g = self.f_z = 0

    def __dealloc__(self):
        free(self.touched)
        free(self.r)
        free(self.products)
        free(self.gates)
        free(self.zones)

    # -- rules ------------------------------------------------------------------
    def set_zone(self, uint32_t idx, int venue, int utc_offset, int64_t live_capacity,
                 bint enforce_exit):
        self.zones = <ZoneRule*>_grow_table(self.zones, &self.cap_zones, idx + 1, sizeof(ZoneRule))
        self.n_zones = max(self.n_zones, idx + 1)
        cdef ZoneRule* z = &self.zones[idx]
        z.venue = venue
        z.utc_offset = utc_offset
        z.live_capacity = live_capacity
        z.enforce_exit = enforce_exit
        if z.day == 0:
            z.day = NEVER

    def zone_inside(self, uint32_t idx, int32_t day):
        """Persons inside zone idx on venue-local `day` (0 once that day is over)."""
        if idx >= self.n_zones or self.zones[idx].day != day:
            return 0
        return self.zones[idx].inside

    cdef void _roll(self, uint32_t zone, ZoneRule* z, int32_t day):
        """First accepted entry of a new day in a zone: whoever is still counted inside
        from an earlier day leaves the head count (venues empty overnight)."""
        cdef TicketRec* t
        stale = _array.array("I")
        for tid in self.inside:
            t = &self.r[<uint32_t>tid]
            if t.state & ST_INSIDE and self.products[t.product].zones[t.comp] == zone:
                t.persons_in = 0
                t.state &= ~ST_INSIDE
                stale.append(tid)
                if self.defer:
                    self._touch(tid)
        if stale and not self.defer:
            self.inside.difference_update(BitMap(stale))
            self.changed.update(stale)
        z.inside = 0
        z.day = day

    def set_gate(self, uint32_t idx, int zone, int venue):
        self.gates = <GateRule*>_grow_table(self.gates, &self.cap_gates, idx + 1, sizeof(GateRule))
        self.n_gates = max(self.n_gates, idx + 1)
        self.gates[idx].zone = zone
        self.gates[idx].venue = venue

    def set_entry_closed(self, bint gate, uint32_t idx, bint closed):
        """Close (or reopen) entry through zone idx, or gate idx with `gate`: an entry
        that would admit there answers ENTRY_CLOSED (offline uploads, facts, are not
        refused)."""
        if gate:
            if idx >= self.n_gates:
                raise IndexError("no such gate")
            self.gates[idx].entry_closed = closed
        else:
            if idx >= self.n_zones:
                raise IndexError("no such zone")
            self.zones[idx].entry_closed = closed

    def set_zone_once(self, uint32_t idx, bint once):
        """Make zone idx a consumption point (a merchant's boat, ride, restaurant) or a
        zone again: at a consumption point each person of a code is admitted once, ever
        (a group's persons one by one if it likes); the next scan is ALREADY_USED,
        whatever the product's re-entry rule."""
        if idx >= self.n_zones:
            raise IndexError("no such zone")
        self.zones[idx].once = once

    def zone_ticks(self, uint32_t idx, int64_t now):
        """Persons admitted into zone idx per TICK_S seconds, the TICKS buckets up to the
        one holding `now`, oldest first (an array('q'))."""
        out = _array.array("q", bytes(8 * TICKS))
        cdef int64_t last = now // TICK_S, b
        cdef int i
        if idx >= self.n_zones:
            return out
        cdef ZoneRule* z = &self.zones[idx]
        for i in range(TICKS):
            b = last - TICKS + 1 + i
            if z.tick_at[b % TICKS] == b:
                out[i] = z.tick_n[b % TICKS]
        return out

    def set_product(self, uint32_t idx, int venue, zones, int max_entries, int daily_entries,
                    bint reentry, int slot_grace):
        if not 1 <= len(zones) <= MAX_COMP:
            raise ValueError("a product admits 1 to 8 zones")
        self.products = <ProductRule*>_grow_table(self.products, &self.cap_products, idx + 1,
                                                  sizeof(ProductRule))
        self.n_products = max(self.n_products, idx + 1)
        cdef ProductRule* p = &self.products[idx]
        p.venue = venue
        p.ncomp = len(zones)
        p.reentry = reentry
        p.max_entries = max_entries
        p.daily_entries = daily_entries
        p.slot_grace = slot_grace
        for i, z in enumerate(zones):
            p.zones[i] = z

    # -- issue, void, block ------------------------------------------------------
    def issue(self, int product, int group, int first_day, int last_day, slots, uint32_t count):
        """Issue `count` codes of `product`, each with one record per component.

        `slots` gives the slot of each component. Returns the first code's id;
        code k has id first + k * ncomp.
        """
        cdef ProductRule* p = &self.products[product]
        cdef uint32_t ncomp = p.ncomp
        if len(slots) != ncomp:
            raise ValueError("one slot per component")
        cdef uint64_t total = <uint64_t>count * ncomp
        if self.n + total > 0xFFFFFFFE:
            raise OverflowError("ticket ids of this shard are exhausted")
        self.r = <TicketRec*>_grow_table(self.r, &self.cap, <uint32_t>(self.n + total), sizeof(TicketRec))
        cdef uint32_t first = self.n, i, c
        cdef uint32_t slot_of[MAX_COMP]
        for c in range(ncomp):
            slot_of[c] = slots[c]
        cdef TicketRec* t
        for i in range(count):
            for c in range(ncomp):
                t = &self.r[first + i * ncomp + c]
                t.slot = slot_of[c]
                t.first_day = first_day
                t.last_day = last_day
                t.visit_day = NEVER
                t.product = product
                t.group = group
                t.persons_in = t.visit_admitted = t.entries = t.day_entries = 0
                t.comp = c
                t.state = ST_ISSUED
        self.n = <uint32_t>(first + total)
        self.issued.add_range(first, self.n)
        return first

    cdef inline bint _is_code(self, uint32_t base) noexcept nogil:
        return base < self.n and self.r[base].comp == 0 and (self.r[base].state & ST_ISSUED)

    def is_code(self, uint32_t base):
        """True if base is the id of an issued code (component 0)."""
        return self._is_code(base)

    def ncomp(self, uint32_t base):
        return self.products[self.r[base].product].ncomp

    def code_state(self, uint32_t base):
        """OR of the state bits of every component of the code at base."""
        cdef int s = 0
        cdef uint32_t c
        for c in range(self.products[self.r[base].product].ncomp):
            s |= self.r[base + c].state
        return s

    def void(self, uint32_t base):
        """Void every component of a code (refund, cancellation)."""
        cdef uint32_t c, nc = self.products[self.r[base].product].ncomp
        for c in range(nc):
            self.r[base + c].state |= ST_VOIDED
        self.voided.add_range(base, base + nc)
        self.changed.add_range(base, base + nc)

    def set_group(self, uint32_t base, uint16_t group):
        """Change the persons a code admits, on every component (a group ticket refunded
        in part, before it is used)."""
        cdef uint32_t c, nc = self.products[self.r[base].product].ncomp
        if group == 0:
            raise ValueError("a code admits at least one person")
        for c in range(nc):
            self.r[base + c].group = group
        self.changed.add_range(base, base + nc)

    def set_blocked(self, uint32_t base, bint blocked):
        """Block (freeze, blacklist) or unblock every component of a code."""
        cdef uint32_t c, nc = self.products[self.r[base].product].ncomp
        for c in range(nc):
            if blocked:
                self.r[base + c].state |= ST_BLOCKED
            else:
                self.r[base + c].state &= ~ST_BLOCKED
        if blocked:
            self.blocked.add_range(base, base + nc)
        else:
            self.blocked.remove_range(base, base + nc)
        self.changed.add_range(base, base + nc)

    def record(self, uint32_t tid):
        """The record of one component, as a dict."""
        if tid >= self.n:
            raise IndexError(tid)
        cdef TicketRec* t = &self.r[tid]
        return {"slot": t.slot, "first_day": t.first_day, "last_day": t.last_day,
                "visit_day": t.visit_day, "product": t.product, "group": t.group,
                "persons_in": t.persons_in, "visit_admitted": t.visit_admitted,
                "entries": t.entries, "day_entries": t.day_entries, "comp": t.comp,
                "state": t.state}

    # -- scans -------------------------------------------------------------------
    cdef void _touch(self, uint32_t tid):
        cdef uint32_t* p
        if self.n_touched == self.cap_touched:
            p = <uint32_t*>realloc(self.touched, max(1024, 2 * self.cap_touched) * sizeof(uint32_t))
            if p == NULL:
                raise MemoryError()
            self.touched = p
            self.cap_touched = max(1024, 2 * self.cap_touched)
        self.touched[self.n_touched] = tid
        self.n_touched += 1

    cdef inline void _set_inside(self, uint32_t tid, TicketRec* t, bint inside):
        if inside:
            t.state |= ST_INSIDE | ST_USED
        else:
            t.state &= ~ST_INSIDE
        if self.defer:
            self._touch(tid)
        elif inside:
            self.used.add(tid)
            self.inside.add(tid)
            self.changed.add(tid)
        else:
            self.inside.discard(tid)
            self.changed.add(tid)

    cdef inline void _admit(self, uint32_t tid, TicketRec* t, ZoneRule* z, int32_t day, int k):
        if day >= z.day:
            t.persons_in += k
            z.inside += k
            self._set_inside(tid, t, True)
        else:
            # a late scan of an earlier day: a visit, but not inside now
            t.state |= ST_USED
            if self.defer:
                self._touch(tid)
            else:
                self.used.add(tid)
                self.changed.add(tid)
        if not self.defer:
            bm = self.entered.get(day)
            if bm is None:
                bm = self.entered[day] = BitMap()
            bm.add(tid)

    # A scan is decided, then applied. _decide_entry/_decide_exit read the rules (validity,
    # entry limits, re-entry, slot window, live capacity, enforce_exit) and change
    # nothing; _apply makes the change an admission (IN: OK or OK_REENTRY; OUT: OK) makes,
    # reading no rule, only the ticket's record and state. A live scan runs both; replay
    # of a journaled scan runs _apply alone with the journaled reason (replay_scans,
    # replay_batch, apply_scan), so a data dir opens the same under changed rules.
    cdef inline int _decide_entry(self, TicketRec* t, ProductRule* p, ZoneRule* z, int32_t day,
                           int64_t now, int persons) noexcept:
        cdef int group = t.group
        cdef bint visit_open = t.visit_day == day
        # persons inside this zone on `day` (a zone not yet entered today holds nobody)
        cdef int64_t cur = z.inside if z.day == day else 0
        cdef bint capped = z.live_capacity != 0 and not self.facts
        cdef SlotRec* s
        if t.state & ST_VOIDED:
            return R_VOIDED
        if t.state & ST_BLOCKED:
            return R_BLOCKED
        if day < t.first_day:
            return R_NOT_YET_VALID
        if day > t.last_day:
            return R_EXPIRED
        if visit_open and t.visit_admitted < group:
            # the rest of a group arrives: part of the same visit
            if capped and cur + _take(group - t.visit_admitted, persons) > z.live_capacity:
                return R_ZONE_FULL
            return R_OK
        if z.once and t.entries:
            return R_ALREADY_USED          # consumed: a ride, a meal is had once
        if visit_open and t.persons_in > 0 and (not p.reentry or t.persons_in >= group):
            return R_ALREADY_USED          # anti-passback: still inside
        if visit_open and p.reentry:
            if capped and cur + _take(group - t.persons_in, persons) > z.live_capacity:
                return R_ZONE_FULL
            return R_OK_REENTRY
        # a new visit
        if p.max_entries and t.entries >= p.max_entries:
            return R_ALREADY_USED if p.max_entries == 1 else R_ENTRY_LIMIT
        if p.daily_entries and visit_open and t.day_entries >= p.daily_entries:
            return R_ENTRY_LIMIT
        if t.slot != _NO_SLOT:
            s = &self.slots.s[t.slot]
            if s.day == day and (now < s.start - p.slot_grace or now > s.end + p.slot_grace):
                return R_WRONG_SLOT
        if capped and cur + _take(group, persons) > z.live_capacity:
            return R_ZONE_FULL
        return R_OK

    cdef inline int _decide_exit(self, TicketRec* t, ZoneRule* z, int32_t day) noexcept:
        if t.visit_day != day or t.persons_in == 0:
            return R_NOT_INSIDE if z.enforce_exit else R_OK
        return R_OK

    cdef inline int _apply(self, uint32_t tid, TicketRec* t, uint32_t zone, ZoneRule* z,
                           int32_t day, int direction, int reason, int persons) except -2:
        """Apply an admission as decided: IN with reason OK or OK_REENTRY, OUT with OK.
        Returns the persons admitted or let out, or -1 if the ticket's state can't
        have given that admission (replay: the journal does not fit the state)."""
        cdef int group = t.group, k
        cdef bint visit_open = t.visit_day == day
        if direction != DIR_IN:
            if t.visit_day != day or t.persons_in == 0:
                return 0                    # not inside: an exit that lets nobody out
            k = _take(t.persons_in, persons)
            t.persons_in -= k
            z.inside -= k
            if t.persons_in == 0:
                self._set_inside(tid, t, False)
            return k
        if reason == R_OK_REENTRY:
            # re-entry after an exit, in the same visit
            k = _take(group - t.persons_in, persons)
            if k <= 0 or not visit_open:
                return -1
            self._admit(tid, t, z, day, k)
            return k
        if visit_open and t.visit_admitted < group:
            # the rest of a group arrives: part of the same visit
            k = _take(group - t.visit_admitted, persons)
            t.visit_admitted += k
            self._admit(tid, t, z, day, k)
            return k
        # a new visit
        k = _take(group, persons)
        if k <= 0:
            return -1
        if day > z.day:
            self._roll(zone, z, day)
        t.entries += 1
        if day < t.visit_day:
            # a late scan (an offline gate's upload) of a day before the current visit:
            # a visit, counted and used, that leaves the current visit as it is
            self._admit(tid, t, z, day, k)
            return k
        t.day_entries = t.day_entries + 1 if visit_open else 1
        t.visit_day = day
        t.visit_admitted = k
        self._admit(tid, t, z, day, k)
        return k

    # -- passage counters (reports) ---------------------------------------------
    cdef int _flow_day(self, int32_t day) except -1:
        """Point the cache at `day`'s counters, made (or grown to the gates and zones
        there are now) first."""
        cdef uint32_t g = max(self.n_gates, 1), zn = max(self.n_zones, 1), og, oz, i
        cdef int64_t[::1] mv
        arr = self.flow.get(day)
        if arr is None or arr[0] < g or arr[1] < zn:
            new = _array.array("q", bytes(8 * (2 + g * 72 + zn)))
            new[0] = g
            new[1] = zn
            if arr is not None:
                og, oz = arr[0], arr[1]
                new[2:2 + og * 72] = arr[2:2 + og * 72]
                for i in range(oz):
                    new[2 + g * 72 + i] = arr[2 + og * 72 + i]
            self.flow[day] = arr = new
        mv = arr
        self.f_arr = arr
        self.fp = &mv[0]
        self.f_day = day
        self.f_g = <uint32_t>arr[0]
        self.f_z = <uint32_t>arr[1]
        return 0

    cdef inline int _count(self, uint32_t gate, uint32_t zone, ZoneRule* z, int32_t day,
                           int64_t now, int direction, int reason, int k) except -1:
        """Count `k` persons passing `gate` (admitted on a visit, re-admitted, or let
        out) in the venue-local hour of `now`, and the zone's peak inside on `day`."""
        cdef int64_t local, hour, tick
        cdef int kind, i
        cdef int64_t* peak
        if k <= 0:
            return 0
        if direction == DIR_IN:
            tick = now // TICK_S
            i = tick % TICKS
            if z.tick_at[i] != tick:
                if z.tick_at[i] > tick:
                    i = -1                  # older than the buckets kept (a late upload)
                else:
                    z.tick_at[i] = tick
                    z.tick_n[i] = 0
            if i >= 0:
                z.tick_n[i] += k
        if day != self.f_day or gate >= self.f_g or zone >= self.f_z:
            self._flow_day(day)
        local = now + z.utc_offset
        hour = (local - <int64_t>day * 86400) // 3600
        if hour < 0 or hour > 23:
            hour = 0 if hour < 0 else 23
        kind = 2 if direction != DIR_IN else (1 if reason == R_OK_REENTRY else 0)
        self.fp[2 + (gate * 24 + hour) * 3 + kind] += k
        if direction == DIR_IN and day == z.day:
            peak = &self.fp[2 + self.f_g * 72 + zone]
            if z.inside > peak[0]:
                peak[0] = z.inside
        return 0

    def flow_counts(self, int32_t day):
        """The passage counters of venue-local `day`: (G, Z, counts) where counts is
        an array('q') copy laid out as the `flow` attribute says, or None if nothing
        passed that day."""
        arr = self.flow.get(day)
        if arr is None:
            return None
        return arr[0], arr[1], _array.array("q", arr)

    cdef inline int _locate(self, uint32_t base, uint32_t gate, int64_t now, int expect_product,
                     uint32_t* tid, uint32_t* zone, int32_t* day) noexcept:
        """The component of the code at base that the gate's zone admits, its zone and
        the venue-local day at `now`: R_OK, or R_UNKNOWN / R_WRONG_ZONE."""
        cdef TicketRec* t
        cdef ProductRule* p
        cdef GateRule* g
        cdef int c
        if not self._is_code(base) or gate >= self.n_gates:
            return R_UNKNOWN
        t = &self.r[base]
        if expect_product >= 0 and t.product != expect_product:
            return R_UNKNOWN
        p = &self.products[t.product]
        g = &self.gates[gate]
        if g.venue != p.venue:
            return R_WRONG_ZONE
        for c in range(p.ncomp):
            if p.zones[c] == g.zone:
                tid[0] = base + c
                zone[0] = g.zone
                day[0] = <int32_t>((now + self.zones[g.zone].utc_offset) // 86400)
                return R_OK
        return R_WRONG_ZONE

    cdef int _scan(self, uint32_t base, uint32_t gate, int direction, int64_t now, int persons,
                   int* admitted, int expect_product) except -2:
        """Decide one scan and apply it if it admits; the persons go to admitted[0]."""
        cdef uint32_t tid = 0, zone = 0
        cdef int32_t day = 0
        cdef int reason
        cdef TicketRec* t
        cdef ZoneRule* z
        admitted[0] = 0
        reason = self._locate(base, gate, now, expect_product, &tid, &zone, &day)
        if reason != R_OK:
            return reason
        t = &self.r[tid]
        z = &self.zones[zone]
        if direction == DIR_IN:
            reason = self._decide_entry(t, &self.products[t.product], z, day, now, persons)
            if reason != R_OK and reason != R_OK_REENTRY:
                return reason
            if (z.entry_closed or self.gates[gate].entry_closed) and not self.facts:
                return R_ENTRY_CLOSED
        else:
            reason = self._decide_exit(t, z, day)
            if reason != R_OK:
                return reason
        admitted[0] = self._apply(tid, t, zone, z, day, direction, reason, persons)
        self._count(gate, zone, z, day, now, direction, reason, admitted[0])
        return reason

    cdef inline int _replay(self, uint32_t base, uint32_t gate, int direction, int64_t now, int persons,
                     int reason, int* admitted) except -2:
        """Apply a journaled scan by its reason, without the rules: a refusal changes
        nothing; an admission is applied as the live scan applied it. Returns 0, or -1
        if the record does not fit the state (a reason out of range, a refusal or
        admission of no code, an admission of a gate or zone the code has no part in, or
        of a ticket whose state can't have been admitted)."""
        cdef uint32_t tid = 0, zone = 0
        cdef int32_t day = 0
        cdef int k
        admitted[0] = 0
        if reason < 0 or reason > R_ENTRY_CLOSED:
            return -1
        if reason == R_FORGED or reason == R_UNKNOWN:
            return 0                        # no ticket of this shard: nothing to change
        if not self._is_code(base):
            return -1
        if reason != R_OK and (direction != DIR_IN or reason != R_OK_REENTRY):
            return 0                        # refused: nothing changed
        if direction != DIR_IN and direction != DIR_OUT:
            return -1
        if self._locate(base, gate, now, -1, &tid, &zone, &day) != R_OK:
            return -1
        k = self._apply(tid, &self.r[tid], zone, &self.zones[zone], day, direction, reason, persons)
        if k < 0:
            return -1
        self._count(gate, zone, &self.zones[zone], day, now, direction, reason, k)
        admitted[0] = k
        return 0

    def scan(self, uint32_t base, uint32_t gate, int direction, int64_t now, int persons):
        """Decide one scan of the code at `base`: (reason, persons admitted or let out)."""
        cdef int admitted = 0
        cdef int reason = self._scan(base, gate, direction, now, persons, &admitted, -1)
        return reason, admitted

    def verify(self, Codec codec, str text, int shard, uint32_t gate, int direction,
               int64_t now, int persons):
        """Decode, authenticate and decide one scan: (reason, base id or -1, persons)."""
        cdef CodeInfo ci
        cdef int admitted = 0, reason
        cdef bytes raw = text.encode("ascii", "replace")
        cdef int st = codec._decode(raw, len(raw), &ci, shard)
        if st != _DEC_OK:
            # a well-formed code of another shard is no ticket here; anything else
            # (not the canonical text, a bad layout, an unknown key, a bad MAC) is forged
            return (R_UNKNOWN if st == _DEC_OTHER_SHARD else R_FORGED), -1, 0
        reason = self._scan(ci.ticket_id, gate, direction, now, persons, &admitted, ci.product)
        return reason, ci.ticket_id, admitted

    def scan_batch(self, ids, gates, int direction, int64_t now, int persons):
        """Decide many scans in order; ids is array('q') of base ids (-1: forged code,
        other negatives: not a code of this shard),
        gates an array('q') of the same length or one gate for all.

        Returns (reasons: bytes, admitted: array('i')). A code appearing twice is
        decided twice, in order, exactly as single scans would be.
        """
        cdef int64_t[:] iv = ids
        cdef Py_ssize_t n = iv.shape[0], i
        cdef int64_t[:] gv
        cdef int64_t one_gate = -1
        if isinstance(gates, int):
            one_gate = gates
        else:
            gv = gates
            if gv.shape[0] != n:
                raise ValueError("ids and gates differ in length")
        reasons = PyBytes_FromStringAndSize(NULL, n)
        cdef char* rv = PyBytes_AS_STRING(reasons)
        admitted = _array.array("i", bytes(4 * n))
        cdef int[:] av = admitted
        cdef int a
        cdef int64_t gate
        self.defer = True
        self.n_touched = 0
        try:
            for i in range(n):
                gate = one_gate if one_gate >= 0 else gv[i]
                a = 0
                if iv[i] == -1:
                    rv[i] = R_FORGED
                elif iv[i] < 0 or gate < 0 or iv[i] > 0xFFFFFFFF:
                    rv[i] = R_UNKNOWN
                else:
                    rv[i] = self._scan(<uint32_t>iv[i], <uint32_t>gate, direction, now, persons, &a, -1)
                av[i] = a
        finally:
            self.defer = False
            self._flush_touched(now)
        return reasons, admitted

    cdef void _flush_touched(self, int64_t now):
        """Apply the bitmap changes of a batch at once: used/inside gain the ids now
        inside, inside loses the ids now out, entered[day] gains every id entered."""
        cdef Py_ssize_t i, n = self.n_touched, n_in = 0, n_out = 0
        self.n_touched = 0
        if n == 0:
            return
        ins = _array.array("I", bytes(4 * n))
        outs = _array.array("I", bytes(4 * n))
        cdef unsigned int[:] iv = ins
        cdef unsigned int[:] ov = outs
        cdef TicketRec* t
        cdef int32_t day = NEVER
        cdef bint one_day = True
        for i in range(n):
            t = &self.r[self.touched[i]]
            if t.state & ST_INSIDE:
                iv[n_in] = self.touched[i]
                n_in += 1
            else:
                ov[n_out] = self.touched[i]
                n_out += 1
            if day == NEVER:
                day = t.visit_day
            elif t.visit_day != day:
                one_day = False
        # every touched id was used: admitted now, or let out, or rolled out of a zone
        all_ids = _array.array("I", (<char*>self.touched)[:4 * n])
        self.used.update(all_ids)
        self.changed.update(all_ids)
        if n_in:
            self.inside.update(ins[:n_in])      # a copy: ins itself is exported to iv
        if n_out:
            self.inside.difference_update(BitMap(outs[:n_out]))
        # every touched id entered on its visit day (exits happen on the day of entry)
        if one_day:
            bm = self.entered.get(day)
            if bm is None:
                bm = self.entered[day] = BitMap()
            bm.update(all_ids)
        else:
            for i in range(n):
                d = self.r[self.touched[i]].visit_day
                bm = self.entered.get(d)
                if bm is None:
                    bm = self.entered[d] = BitMap()
                bm.add(self.touched[i])

    def replay_scans(self, bytes blob, Py_ssize_t off):
        """Replay the run of journal SCAN records starting at `off`, applying each as it
        was decided (_replay: the journaled reason, not today's rules).

        Returns (offset after the run, records replayed, ticket id of the first record
        that does not fit the state or -1). The journal record is
        u32 length | u8 op (30) | u32 base | u16 gate | u8 direction | u16 persons |
        i64 time | u8 reason, little-endian.
        """
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(blob)
        cdef Py_ssize_t end = PyBytes_GET_SIZE(blob), n = 0
        cdef uint32_t length, base
        cdef int gate, direction, persons, reason, admitted
        cdef int64_t at
        while off + 5 <= end:
            length = _ld32(p + off)
            if p[off + 4] != 30 or length != 18 or off + 5 + 18 > end:
                break
            base = _ld32(p + off + 5)
            gate = _ld16(p + off + 9)
            direction = p[off + 11]
            persons = _ld16(p + off + 12)
            at = <int64_t>_load64(p + off + 14)
            reason = p[off + 22]
            if self._replay(base, gate, direction, at, persons, reason, &admitted) < 0:
                return off, n, base
            off += 5 + 18
            n += 1
        return off, n, -1

    def replay_batch(self, ids, gates, int direction, int64_t now, int persons, bytes reasons):
        """Replay a journaled scan batch (scan_batch's ids, gates, direction, time and
        persons, and the reasons it decided), applying each scan as decided, in batch
        mode as scan_batch applied it. Returns the index of the first scan that does not
        fit the state, or -1."""
        cdef int64_t[:] iv = ids
        cdef Py_ssize_t n = iv.shape[0], i, bad = -1
        cdef int64_t[:] gv
        cdef int64_t one_gate = -1, gate, tid
        cdef const uint8_t* rv = <const uint8_t*>PyBytes_AS_STRING(reasons)
        cdef int a, reason
        if isinstance(gates, int):
            one_gate = gates
        else:
            gv = gates
            if gv.shape[0] != n:
                raise ValueError("ids and gates differ in length")
        if PyBytes_GET_SIZE(reasons) != n:
            raise ValueError("ids and reasons differ in length")
        self.defer = True
        self.n_touched = 0
        try:
            for i in range(n):
                gate = one_gate if one_gate >= 0 else gv[i]
                tid = iv[i]
                reason = rv[i]
                if tid < 0 or tid > 0xFFFFFFFF or gate < 0 or gate > 0xFFFF:
                    # no code of this shard (or no gate): only a refusal of no ticket fits
                    if reason != R_FORGED and reason != R_UNKNOWN:
                        bad = i
                        break
                    continue
                if self._replay(<uint32_t>tid, <uint32_t>gate, direction, now, persons, reason, &a) < 0:
                    bad = i
                    break
        finally:
            self.defer = False
            self._flush_touched(now)
        return bad

    def apply_scan(self, uint32_t base, uint32_t gate, int direction, int64_t now, int persons,
                   int reason):
        """Apply one scan as it was decided (reason), without the rules: the persons it
        admitted or let out, or -1 if it does not fit the state (see _replay)."""
        cdef int admitted = 0
        if self._replay(base, gate, direction, now, persons, reason, &admitted) < 0:
            return -1
        return admitted

    def select(self, bm, int venue, bint exhausted=False):
        """The ids of `bm` whose product belongs to venue index `venue` (-1: any); with
        `exhausted`, only those that may start no further visit (max_entries reached, or
        admitted at a consumption point).
        An offline gate's bundle is made of such selections."""
        ids = bm.to_array()
        cdef unsigned int[:] iv = ids
        cdef Py_ssize_t i, n = iv.shape[0], k = 0
        out = _array.array("I", bytes(4 * n))
        cdef unsigned int[:] ov = out
        cdef TicketRec* t
        cdef ProductRule* p
        for i in range(n):
            if iv[i] >= self.n:
                continue
            t = &self.r[iv[i]]
            p = &self.products[t.product]
            if venue >= 0 and p.venue != venue:
                continue
            if exhausted and not (t.entries and (p.max_entries and t.entries >= p.max_entries
                                                 or self.zones[p.zones[t.comp]].once)):
                continue
            ov[k] = iv[i]
            k += 1
        return BitMap(out[:k])

    # -- persistence -------------------------------------------------------------
    def records(self):
        """A copy of all records, RECORD_SIZE bytes each (snapshots, check())."""
        return PyBytes_FromStringAndSize(<char*>self.r, self.n * sizeof(TicketRec))

    def product_counts(self, int n_products):
        """[codes issued, used, voided, blocked] per product index, in one pass over the
        records (ReportService.TicketCounts). A code is used if any of its components
        is; components follow their code, so the used ones of a code come together."""
        if n_products < 1:
            return []
        cdef uint64_t* c = <uint64_t*>calloc(4 * n_products, sizeof(uint64_t))
        if c == NULL:
            raise MemoryError()
        cdef uint32_t i, base, last_used = 0xFFFFFFFF
        cdef TicketRec* t
        try:
            with nogil:
                for i in range(self.n):
                    t = &self.r[i]
                    if t.product >= n_products:
                        continue
                    if t.comp == 0:
                        c[4 * t.product] += 1
                        if t.state & ST_VOIDED:
                            c[4 * t.product + 2] += 1
                        if t.state & ST_BLOCKED:
                            c[4 * t.product + 3] += 1
                    if t.state & ST_USED:
                        base = i - t.comp
                        if base != last_used:
                            last_used = base
                            c[4 * t.product + 1] += 1
            return [[c[4 * k], c[4 * k + 1], c[4 * k + 2], c[4 * k + 3]] for k in range(n_products)]
        finally:
            free(c)

    def zone_counts(self, ids, table, int width, int n_zones):
        """How many of the tickets `ids` (a uint32 buffer: a bitmap's to_array()) lie in
        each zone, a record's zone being table[product * width + comp] (ReportService.
        LiveCounts: the tickets entered on a day, per zone)."""
        cdef const uint32_t[::1] v = ids
        cdef const int64_t[::1] z = table
        cdef Py_ssize_t k, j, nz = z.shape[0], nv = v.shape[0]
        cdef int64_t zi
        cdef TicketRec* t
        if n_zones < 1:
            return []
        cdef uint64_t* c = <uint64_t*>calloc(n_zones, sizeof(uint64_t))
        if c == NULL:
            raise MemoryError()
        try:
            with nogil:
                for k in range(nv):
                    if v[k] >= self.n:
                        continue
                    t = &self.r[v[k]]
                    j = <Py_ssize_t>t.product * width + t.comp
                    if j < nz:
                        zi = z[j]
                        if 0 <= zi < n_zones:
                            c[zi] += 1
            return [c[k] for k in range(n_zones)]
        finally:
            free(c)

    def zone_counters(self):
        """[inside, day] of every zone."""
        return [[self.zones[i].inside, self.zones[i].day] for i in range(self.n_zones)]

    def dump(self):
        return {
            "records": self.records(),
            "zones_inside": self.zone_counters(),
            "used": self.used.serialize(),
            "inside": self.inside.serialize(),
            "voided": self.voided.serialize(),
            "blocked": self.blocked.serialize(),
            "entered": {d: bm.serialize() for d, bm in self.entered.items()},
            "flow": {d: arr.tobytes() for d, arr in self.flow.items()},
        }

    def load(self, dict blob):
        """Restore a dump; zones, gates and products must be set first."""
        cdef bytes recs = blob["records"]
        if len(recs) % sizeof(TicketRec):
            raise ValueError("ticket snapshot has the wrong record size")
        cdef uint32_t n = len(recs) // sizeof(TicketRec)
        self.r = <TicketRec*>_grow_table(self.r, &self.cap, max(n, 1), sizeof(TicketRec))
        memcpy(self.r, PyBytes_AS_STRING(recs), len(recs))
        self.n = n
        for i, (inside, day) in enumerate(blob["zones_inside"]):
            if i < self.n_zones:
                self.zones[i].inside = inside
                self.zones[i].day = day
        self.issued = BitMap()
        if n:
            self.issued.add_range(0, n)
        self.used = BitMap.deserialize(blob["used"])
        self.inside = BitMap.deserialize(blob["inside"])
        self.voided = BitMap.deserialize(blob["voided"])
        self.blocked = BitMap.deserialize(blob["blocked"])
        self.entered = {int(d): BitMap.deserialize(b) for d, b in blob["entered"].items()}
        self.flow = {}
        for d, b in blob.get("flow", {}).items():
            arr = _array.array("q")
            arr.frombytes(b)
            if len(arr) < 2 or len(arr) != 2 + arr[0] * 72 + arr[1]:
                raise ValueError(f"the passage counters of day {d} have the wrong size")
            self.flow[int(d)] = arr
        self.f_arr = None
        self.fp = NULL
        self.f_day = NEVER
        self.f_g = self.f_z = 0
