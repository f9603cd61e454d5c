"""Run the bundled demo from a checkout: ``python pipelines/demo.py [OUTPUT]``.

Same as ``geoseg demo``; kept here with the other recipes so the chain can be read in one
place (geoseg/demo.py) and run without the CLI.
"""

import json
import logging
import sys

from geoseg.demo import demo

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    out = sys.argv[1] if len(sys.argv) > 1 else "geoseg-demo"
    result = demo(out, overwrite=True)
    print(json.dumps({"score": result["score"], "seconds": result["seconds"]}, indent=2))
