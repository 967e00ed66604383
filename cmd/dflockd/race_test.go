//go:build race

package main

// raceEnabled: the tests run with -race, so the server binary they start is
// built with -race too (a data race in the server then fails the test that
// started it).
const raceEnabled = true
