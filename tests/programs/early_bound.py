from time import perf_counter  # bound at import time: must still be virtual


def now():
    return perf_counter()
