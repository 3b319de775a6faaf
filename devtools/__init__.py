"""Development tools that ship with a checkout, never in the runtime package or the
Elastic Beanstalk bundle: the demo WMS (MapServer behind lighttpd) and the local S3
website endpoint (LocalStack) of ``make run`` and ``make run-website``, also used by
the tests and the benchmarks."""
