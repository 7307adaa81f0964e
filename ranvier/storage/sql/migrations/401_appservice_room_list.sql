-- Rooms an appservice published in its own directory for one of its networks
-- (PUT /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}).
CREATE TABLE appservice_room_list (
    as_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (as_id, network_id, room_id)
);
