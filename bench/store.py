"""Driver traffic vs clip bytes, side by side in one run: the sample bucket curated (local Ray, default
config) to a local OUTPUT and to s3:// on a local moto server. Prints, per OUTPUT, the clip bytes the
workers published and the pickled bytes the driver received from / sent to each stage (run.json's
`driver_bytes_received` / `driver_bytes_sent`), and the ratios for the stages that handle clips.

    python bench/store.py
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

CLIP_STAGES = ("transcode", "caption", "finalize")  # finalize's workers write the shards (inline on one node)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def report(name: str, run: dict) -> None:
    clip = run["clip_bytes_written"]
    received, sent = run["driver_bytes_received"], run["driver_bytes_sent"]
    print(f"{name}: clip bytes written {clip:,}; wall {run['wall_s']:.1f} s")
    print(f"  driver received {received['total']:,} B, sent {sent['total']:,} B")
    for stage in sorted((set(received) | set(sent)) - {"total"}):
        print(f"    {stage:<10} received {received.get(stage, 0):>11,}  sent {sent.get(stage, 0):>11,}")
    both = sum(received.get(s, 0) + sent.get(s, 0) for s in CLIP_STAGES)
    print(f"  ratios to clip bytes: transcode received {received['transcode'] / clip:.4f}, caption sent "
          f"{sent['caption'] / clip:.4f}, {' + '.join(CLIP_STAGES)} both ways {both / clip:.4f} "
          f"(before issue 18, by construction, transcode received >= 1.0: every clip's bytes)")
    print(f"  all stages both ways / clip bytes: {(received['total'] + sent['total']) / clip:.4f} (36.9 when the "
          f"driver forwarded every input's frame taps to each scorer pool)")


def main() -> None:
    import s3fs
    from moto.server import ThreadedMotoServer

    from vidmill.pipeline.samples import write_samples

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("bench")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            samples, config = Path(tmp) / "samples", Path(tmp) / "s3.yaml"
            write_samples(samples)
            config.write_text(json.dumps({"output": {"storage_options": options}}))
            curate = [sys.executable, "-m", "vidmill", "curate", str(samples)]
            subprocess.run([*curate, f"{tmp}/out", "--no-progress"], check=True, capture_output=True)
            subprocess.run([*curate, "s3://bench/out", "--config", str(config), "--no-progress"], check=True,
                           capture_output=True)
            report("local OUTPUT", json.loads(Path(f"{tmp}/out/run.json").read_text()))
            report("s3:// OUTPUT (moto)", json.loads(fs.cat_file("bench/out/run.json")))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
