"""What the tests run against: real servers and their stand-ins, fault proxies, harnesses and
oracles. Nothing here is a test."""
