--! prelude: base, cart
-- cart_add.lua: add units of one SKU to a cart (AddItem), summing with an existing line. A new
-- line snapshots the catalog price passed in and Redis's now as added_at; an existing line
-- keeps its snapshot. Caps and the advisory stock check are settled against the line as it is
-- inside this script, so concurrent adds from two devices can never together pass a cap.
--
-- KEYS[1] cart  cart:{<owner>}  hash _v, _u, _m:<session>, l:<sku> (layout in docs/cart.md)
-- ARGV[1] store_checked     '1': the caller found no durable copy, so an absent key is a new
--                           cart; otherwise an absent key answers 'cold' and writes nothing
-- ARGV[2] expected_version  0 = any; else the cart's version must equal it
-- ARGV[3] sku               the SKU, non-empty
-- ARGV[4] qty               units to add, integer >= 1
-- ARGV[5] unit_price_minor  the catalog price now, integer >= 0 (snapshot of a new line)
-- ARGV[6] currency          ISO-4217 code of that price
-- ARGV[7] available         units inventory has available; the line may not end above it
-- ARGV[8] max_lines         most lines a cart may hold, integer >= 1
-- ARGV[9] max_qty           most units one line may hold, integer >= 1
-- ARGV[10] ttl_ms           cart lifetime after this change, integer >= 1
--
-- Reply: {status, n, {HGETALL of the cart after the call}}
--   {'ok', version}                  added; the new version
--   {'cold', 0}                      the key is absent and ARGV[1] is not '1'; nothing written
--   {'version_conflict', version}    expected_version differs; the current version
--   {'line_cap', max_lines}          a new line would exceed max_lines; nothing written
--   {'quantity_cap', line_qty}       the line would exceed max_qty; its current quantity
--   {'out_of_stock', line_qty}       the line would exceed available; its current quantity

return add_line('cart_add', KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]),
  tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]))
