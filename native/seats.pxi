# Seats of one session (a slot with a seat map): which seat is free, held, sold or never
# sold, and the best available seats for N persons, decided here in one pass over the
# hall.
#
# A hall is rows of seats; each seat has a price zone (0: best) and a column, and two
# seats of a row are adjacent when their columns follow each other (an aisle is a gap
# of a column). Seats are numbered 0..n-1 row by row, left to right.

DEF SEAT_FREE = 0
DEF SEAT_HELD = 1
DEF SEAT_SOLD = 2
DEF SEAT_NEVER = 3

SEAT_STATES = ("free", "held", "sold", "never")


cdef class Seats:
    """The seats of one session."""
    cdef int32_t* row          # row of each seat (0: the first row of the map)
    cdef int32_t* col          # column of each seat within its row (gaps skipped)
    cdef uint8_t* zone         # price zone of each seat (0: best)
    cdef uint8_t* st           # SEAT_FREE / HELD / SOLD / NEVER
    cdef int32_t* row_first    # first seat of each row
    cdef int32_t* row_mid2     # twice the middle column of each row (centre of the row)
    cdef readonly int32_t n, n_rows, n_zones
    cdef readonly int32_t free_seats

    def __cinit__(self):
        self.row = self.col = self.row_first = self.row_mid2 = NULL
        self.zone = self.st = NULL
        self.n = self.n_rows = self.n_zones = self.free_seats = 0

    def __dealloc__(self):
        free(self.row); free(self.col); free(self.zone); free(self.st)
        free(self.row_first); free(self.row_mid2)

    def __init__(self, rows, int n_zones):
        """`rows`: per row, its seats as (column, zone, never sold) in column order."""
        cdef int32_t n = sum(len(r) for r in rows), i = 0, r, lo, hi
        self.n, self.n_rows, self.n_zones = n, len(rows), n_zones
        self.row = <int32_t*>malloc(max(n, 1) * sizeof(int32_t))
        self.col = <int32_t*>malloc(max(n, 1) * sizeof(int32_t))
        self.zone = <uint8_t*>malloc(max(n, 1))
        self.st = <uint8_t*>calloc(max(n, 1), 1)
        self.row_first = <int32_t*>malloc((self.n_rows + 1) * sizeof(int32_t))
        self.row_mid2 = <int32_t*>malloc(max(self.n_rows, 1) * sizeof(int32_t))
        if not (self.row and self.col and self.zone and self.st and self.row_first and self.row_mid2):
            raise MemoryError()
        for r, seats in enumerate(rows):
            self.row_first[r] = i
            lo, hi = 1 << 30, -1
            for c, z, never in seats:
                if not 0 <= z < n_zones:
                    raise ValueError(f"zone {z} of a seat of row {r}")
                self.row[i], self.col[i], self.zone[i] = r, c, z
                self.st[i] = SEAT_NEVER if never else SEAT_FREE
                if not never:
                    self.free_seats += 1
                lo, hi = min(lo, c), max(hi, c)
                i += 1
            self.row_mid2[r] = lo + hi if hi >= 0 else 0
        self.row_first[self.n_rows] = n

    def state(self, int32_t seat):
        if not 0 <= seat < self.n:
            raise IndexError(seat)
        return self.st[seat]

    def states(self):
        """Every seat's state, as bytes (0 free, 1 held, 2 sold, 3 never sold)."""
        return PyBytes_FromStringAndSize(<char*>self.st, self.n)

    def load(self, bytes states):
        """The states `states()` gave (a snapshot); the layout must be the same."""
        cdef int32_t i
        if len(states) != self.n:
            raise ValueError("the seat states do not fit this hall")
        memcpy(self.st, PyBytes_AS_STRING(states), self.n)
        self.free_seats = 0
        for i in range(self.n):
            if self.st[i] > SEAT_NEVER:
                raise ValueError(f"seat {i} has no state {self.st[i]}")
            self.free_seats += self.st[i] == SEAT_FREE

    cdef bint _all(self, seats, uint8_t want) except -1:
        cdef int32_t s
        for s in seats:
            if not 0 <= s < self.n:
                raise IndexError(s)
            if self.st[s] != want:
                return False
        return len(set(seats)) == len(seats)

    def take(self, seats):
        """Hold `seats` (free ones), all or nothing; False (nothing held) if any is not free."""
        cdef int32_t s
        if not self._all(seats, SEAT_FREE):
            return False
        for s in seats:
            self.st[s] = SEAT_HELD
        self.free_seats -= len(seats)
        return True

    cdef void _move(self, seats, uint8_t frm, uint8_t to) except *:
        cdef int32_t s
        if not self._all(seats, frm):
            raise ValueError(f"seats {list(seats)} are not all {SEAT_STATES[frm]}")
        for s in seats:
            self.st[s] = to
        self.free_seats += (to == SEAT_FREE) * len(seats) - (frm == SEAT_FREE) * len(seats)

    def release(self, seats):
        """Held seats free again (a hold that ended unpaid)."""
        self._move(seats, SEAT_HELD, SEAT_FREE)

    def sell(self, seats):
        """Held seats sold (a hold paid)."""
        self._move(seats, SEAT_HELD, SEAT_SOLD)

    def unsell(self, seats):
        """Sold seats free again (their tickets refunded)."""
        self._move(seats, SEAT_SOLD, SEAT_FREE)

    def free_in_zone(self, int zone):
        cdef int32_t i, k = 0
        for i in range(self.n):
            k += self.st[i] == SEAT_FREE and self.zone[i] == zone
        return k

    def best(self, int32_t want, zone=None):
        """The best free seats for `want` persons, or None: in the best price zone that
        has them (or `zone` only), `want` adjacent seats of one row if any row has them,
        leaving the fewest single free seats beside them, then in the front-most row,
        then nearest the middle of the row. Without adjacent seats anywhere, the zone's
        first free seats in row order; then any zone's."""
        cdef int32_t z, z0, z1, i, j, r, lo, hi, p, left, right, singles, dist, last_col
        cdef int32_t best_at, best_singles, best_row, best_dist
        cdef list out
        if want < 1 or want > self.free_seats:
            return None
        z0, z1 = (0, self.n_zones) if zone is None else (zone, zone + 1)
        for z in range(z0, z1):
            best_at, best_singles, best_row, best_dist = -1, 3, 1 << 30, 1 << 30
            for r in range(self.n_rows):
                i = self.row_first[r]
                hi = self.row_first[r + 1]
                while i < hi:
                    if self.st[i] != SEAT_FREE or self.zone[i] != z:
                        i += 1
                        continue
                    j = i + 1        # the run of adjacent free seats of the zone from i
                    while j < hi and self.st[j] == SEAT_FREE and self.zone[j] == z \
                            and self.col[j] == self.col[j - 1] + 1:
                        j += 1
                    if j - i >= want:
                        for p in range(i, j - want + 1):
                            left, right = p - i, j - (p + want)
                            singles = (left == 1) + (right == 1)
                            dist = abs(self.col[p] + self.col[p + want - 1] - self.row_mid2[r])
                            if singles < best_singles or (singles == best_singles and (
                                    r < best_row or (r == best_row and dist < best_dist))):
                                best_at, best_singles, best_row, best_dist = p, singles, r, dist
                    i = j
            if best_at >= 0:
                return list(range(best_at, best_at + want))
        for z in range(z0, z1):            # nowhere adjacent: the zone's first free seats
            out = [i for i in range(self.n) if self.st[i] == SEAT_FREE and self.zone[i] == z]
            if len(out) >= want:
                return out[:want]
        if zone is not None:
            return None
        return [i for i in range(self.n) if self.st[i] == SEAT_FREE][:want]

    def zone_of(self, int32_t seat):
        if not 0 <= seat < self.n:
            raise IndexError(seat)
        return self.zone[seat]

    def counts(self):
        """(free, held, sold, never sold) seats."""
        cdef int32_t i
        cdef int32_t c[4]
        c[0] = c[1] = c[2] = c[3] = 0
        for i in range(self.n):
            c[self.st[i]] += 1
        return c[0], c[1], c[2], c[3]
