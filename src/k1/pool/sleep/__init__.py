"""The server's sleep: `k1 pool serve` runs DREAM by itself when it is due — enough new verified experiences
since the last cycle, sooner while the pool rests — as a separate `k1 pool dream` process, under a store lease
so that one replica of many runs each cycle; every replica then takes up the new student without a restart."""
