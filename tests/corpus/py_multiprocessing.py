"""multiprocessing: a Pool(2) of forked workers maps a function over a range."""
import multiprocessing


def square(x):
    return x * x


if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        results = pool.map(square, range(200))
    print("multiprocessing", sum(results), multiprocessing.cpu_count() > 0)
