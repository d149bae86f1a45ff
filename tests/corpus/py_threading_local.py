"""threading.local: per-thread state in four threads."""
import threading

state = threading.local()
results = []
lock = threading.Lock()


def work(n):
    state.items = []
    for i in range(n):
        state.items.append(i * 2)
    with lock:
        results.append(sum(state.items))


threads = [threading.Thread(target=work, args=(500 * (k + 1),)) for k in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
state.items = ["main"]
print("threading.local", sorted(results), state.items)
