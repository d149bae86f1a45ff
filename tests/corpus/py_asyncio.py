"""asyncio.run of a few tasks that pass items through a queue."""
import asyncio


async def producer(queue, n):
    for i in range(n):
        await queue.put(i)
        if i % 50 == 0:
            await asyncio.sleep(0)
    await queue.put(None)


async def consumer(queue):
    total = 0
    while (item := await queue.get()) is not None:
        total += item
    return total


async def main():
    queue = asyncio.Queue(maxsize=10)
    prod = asyncio.create_task(producer(queue, 2000))
    cons = asyncio.create_task(consumer(queue))
    timed = asyncio.wait_for(asyncio.sleep(0.01, result="slept"), timeout=1)
    results = await asyncio.gather(prod, cons, timed)
    return results[1:]


print("asyncio", asyncio.run(main()))
