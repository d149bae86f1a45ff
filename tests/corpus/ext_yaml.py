"""PyYAML with libyaml: dump with CDumper, load with CLoader, 2,000 round trips."""
import yaml

doc = {"name": "service", "replicas": 3, "ports": [80, 443], "env": {"DEBUG": False},
       "ratio": 0.25, "items": ["x0", "x1"]}
total = 0
for i in range(2000):
    doc["replicas"] = i
    text = yaml.dump(doc, Dumper=yaml.CDumper)
    back = yaml.load(text, Loader=yaml.CLoader)
    assert back["replicas"] == i and back["items"][1] == "x1"
    total += len(text)
print("yaml", total)
