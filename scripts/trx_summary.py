"""Sums the results of every .trx file under a folder and prints 'N passed, N failed, N skipped'.

Counts each UnitTestResult by its outcome rather than the file's Counters: the xunit TRX logger
writes a skipped test as a result with outcome NotExecuted but leaves the notExecuted counter at 0
(it shows only as total > executed), so the counters alone reported skipped tests as nothing.
Exits 1 when a test failed or when no test ran at all (a run that executed nothing is not a pass)."""
import glob
import sys
import xml.etree.ElementTree as ET

ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
FAILED = {"Failed", "Error", "Timeout", "Aborted"}
passed = failed = skipped = 0
files = glob.glob(f"{sys.argv[1]}/**/*.trx", recursive=True)
for path in files:
    for result in ET.parse(path).getroot().iter(f"{{{ns['t']}}}UnitTestResult"):
        outcome = result.get("outcome", "")
        if outcome == "Passed":
            passed += 1
        elif outcome in FAILED:
            failed += 1
        else:  # NotExecuted, Inconclusive, ...: did not run
            skipped += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or not files or passed == 0 else 0)
