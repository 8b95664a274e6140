"""Sums the results of every .trx file under a folder and prints 'N passed, N failed, N skipped'.

Counts each UnitTestResult by its outcome rather than the file's Counters: the xunit TRX logger
writes a skipped test as a result with outcome NotExecuted but leaves the notExecuted counter at 0
(it shows only as total > executed), so the counters alone reported skipped tests as nothing.
A test run that did not complete (its test host crashed: the run is aborted and the results of the tests
still running are lost) counts as one failure, with the reason printed, even when none of the results it
wrote failed.
Each failed test is listed with the first lines of its message just before the summary, so that the tail of
a long log (all a CI report may keep) still names what failed.
Exits 1 when a test failed or when no test ran at all (a run that executed nothing is not a pass)."""
import glob
import sys
import xml.etree.ElementTree as ET

ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
FAILED = {"Failed", "Error", "Timeout", "Aborted"}
passed = failed = skipped = 0
failures = []
files = glob.glob(f"{sys.argv[1]}/**/*.trx", recursive=True)
for path in files:
    root = ET.parse(path).getroot()
    failed_here = 0
    for result in root.iter(f"{{{ns['t']}}}UnitTestResult"):
        outcome = result.get("outcome", "")
        if outcome == "Passed":
            passed += 1
        elif outcome in FAILED:
            failed_here += 1
            message = result.find("t:Output/t:ErrorInfo/t:Message", ns)
            text = (message.text or "").strip() if message is not None else ""
            failures.append((result.get("testName", "?"), outcome, "\n    ".join(text.splitlines()[:6])))
        else:  # NotExecuted, Inconclusive, ...: did not run
            skipped += 1
    failed += failed_here
    summary = root.find("t:ResultSummary", ns)
    run_outcome = summary.get("outcome", "") if summary is not None else ""
    if run_outcome in FAILED and failed_here == 0:
        reasons = [t.text.strip() for t in root.iterfind(".//t:RunInfos/t:RunInfo/t:Text", ns) if t.text and "abort" in t.text.lower()]
        print(f"test run {path} did not complete ({run_outcome}): {reasons[0] if reasons else 'no reason recorded'}")
        failed += 1
for name, outcome, text in failures:
    print(f"{outcome}: {name}\n    {text or 'no message recorded'}")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or not files or passed == 0 else 0)
