// Counts heap allocations made by the calling thread while counting is on. Linked only into the
// micro-benchmark executable, where its malloc family interposes glibc's.
#ifndef TERN_ALLOC_COUNTER_H
#define TERN_ALLOC_COUNTER_H
void tern_alloc_counting(int on);
long tern_alloc_count(void);
#endif
