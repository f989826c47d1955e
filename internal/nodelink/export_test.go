package nodelink

// CheckSlots exposes checkSlots to the tests.
var CheckSlots = checkSlots
