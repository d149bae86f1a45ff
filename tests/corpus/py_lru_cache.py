"""functools.lru_cache: a memoized recursive function and a bounded cache."""
import functools


@functools.lru_cache(maxsize=None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


@functools.lru_cache(maxsize=128)
def square(key):
    return {"key": key, "value": key * key}


@functools.cache
def word(n):
    return "w%d" % n


total = fib(300) % 1000
for i in range(2000):
    total += square(i % 100)["value"] + len(word(i % 50))
print("lru_cache", total, square.cache_info().hits, fib.cache_info().currsize)
