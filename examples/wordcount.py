"""Word count: the "hello world" of stream processing.

Reads the text files in examples/data, splits lines into words, and keeps a running
count per word: every word seen emits {"key": word, "count": n}. Run it with

    mesh run examples/wordcount.py --nodes 2 --parallelism 2

and the counts land in out/wordcount/part-*.jsonl (the last count per word is its
total).
"""

import re

from mesh import Job, sinks, sources

WORD = re.compile(r"[a-z']+")

job = Job("wordcount", parallelism=2)

lines = job.source(sources.TextFile("examples/data/*.txt")).name("read text")
words = lines.flat_map(lambda line: WORD.findall(line.lower())).name("split words")
counts = words.key_by(lambda word: word).count().name("count per word")
counts.sink(sinks.JsonLines("out/wordcount")).name("write counts")
