from tests.reliability import report


def pytest_sessionfinish(session, exitstatus):
    report.write_page()
