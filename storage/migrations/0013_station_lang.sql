-- The station's languages (issue #20 item 6): each user reads the pages in English or French,
-- chosen with `sqal station user add --lang` or the switch on the page. The column came with
-- the station's users in 0012 (`language`, default 'en'); this allows only the languages the
-- station has a catalogue for (station/words.py), so a typo cannot leave a user with pages
-- in no language. The station role may already update station_users (0012).
UPDATE station_users SET language = 'en' WHERE language NOT IN ('en', 'fr');
ALTER TABLE station_users ADD CONSTRAINT station_users_language
    CHECK (language IN ('en', 'fr'));
