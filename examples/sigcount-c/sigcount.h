/* What the BPF program and the plugin share: one counter slot per signal
 * number (1..64; slot 0 is unused). Fixed-size types only. */
#ifndef SIGCOUNT_H
#define SIGCOUNT_H

#define SIGCOUNT_SLOTS 65

#endif
