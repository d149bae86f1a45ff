"""msgpack: packb and unpackb of a nested document, 2,000 round trips."""
import msgpack

doc = {"id": 0, "name": "sensor", "values": [1.5, 2.5, 3.5], "meta": {"ok": True, "raw": b"\x00\x01"},
       "rows": [[i, "r%d" % i] for i in range(10)]}
total = 0
for i in range(2000):
    doc["id"] = i
    data = msgpack.packb(doc, use_bin_type=True)
    back = msgpack.unpackb(data, raw=False)
    assert back["id"] == i and back["rows"][9] == [9, "r9"]
    total += len(data)
print("msgpack", total)
